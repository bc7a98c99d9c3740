/* A fake GA/T 947 recorder SDK for tests: the prototypes of firmware_interface/zfy.py.
 *
 * Behaviour comes from the control file named by $FAKE_ZFY_CONTROL, re-read on every call,
 * one key=value a line (values are raw bytes, so GBK text goes in as it is):
 *   password=...     the password the "recorder" accepts (wrong one: iRet 4)
 *   serial= user_no= user_name= unit_no= unit_name=     ZFY_INFO fields
 *   battery=NN       ReadDeviceBatteryDumpEnergy's answer
 *   fail_<Function>=CODE   make that function return 0 with iRet CODE (2, 6, 8, ...)
 *   msdc_cmd=...     shell command SetMSDC runs to "re-enumerate as mass storage"
 *   log=PATH         every call appends "<Function> <iRet>" (SyncDevTime adds the time set)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char cSerial[8];
    char userNo[7];
    char userName[33];
    char unitNo[13];
    char unitName[33];
} ZFY_INFO;

static int get(const char *key, char *out, size_t size) {
    const char *path = getenv("FAKE_ZFY_CONTROL");
    char line[1024];
    size_t klen = strlen(key);
    FILE *fh = path ? fopen(path, "rb") : NULL;
    int found = 0;
    if (!fh) return 0;
    while (fgets(line, sizeof line, fh)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            snprintf(out, size, "%s", line + klen + 1);
            found = 1;
        }
    }
    fclose(fh);
    return found;
}

static void log_call(const char *func, int code, const char *detail) {
    char path[512];
    FILE *fh;
    if (!get("log", path, sizeof path)) return;
    fh = fopen(path, "a");
    if (!fh) return;
    fprintf(fh, "%s %d%s%s\n", func, code, detail ? " " : "", detail ? detail : "");
    fclose(fh);
}

/* Common checks: a forced failure, then the password. Returns 0 to go on, else the iRet. */
static int check(const char *func, const char *password) {
    char key[64], value[256];
    snprintf(key, sizeof key, "fail_%s", func);
    if (get(key, value, sizeof value)) return atoi(value);
    if (!get("password", value, sizeof value)) value[0] = '\0';
    if (!password || strcmp(password, value) != 0) return 4;
    return 0;
}

static int finish(const char *func, int code, int *iRet, const char *detail) {
    *iRet = code;
    log_call(func, code, detail);
    return code % 2 == 1 ? 1 : 0;
}

int Init_Device(char *password, int *iRet) {
    int code = check("Init_Device", password);
    return finish("Init_Device", code ? code : 1, iRet, NULL);
}

static void field(const char *key, char *out, size_t size) {
    char value[256];
    memset(out, 0, size);
    if (get(key, value, sizeof value)) memcpy(out, value, strnlen(value, size)); /* may fill */
}

int GetZFYInfo(ZFY_INFO *info, char *password, int *iRet) {
    int code = check("GetZFYInfo", password);
    if (!code) {
        field("serial", info->cSerial, sizeof info->cSerial);
        field("user_no", info->userNo, sizeof info->userNo);
        field("user_name", info->userName, sizeof info->userName);
        field("unit_no", info->unitNo, sizeof info->unitNo);
        field("unit_name", info->unitName, sizeof info->unitName);
    }
    return finish("GetZFYInfo", code ? code : 3, iRet, NULL);
}

int ReadDeviceBatteryDumpEnergy(int *battery, char *password, int *iRet) {
    char value[32];
    int code = check("ReadDeviceBatteryDumpEnergy", password);
    if (!code) *battery = get("battery", value, sizeof value) ? atoi(value) : 0;
    return finish("ReadDeviceBatteryDumpEnergy", code ? code : 3, iRet, NULL);
}

int SyncDevTime(char *password, int *iRet) {
    char stamp[32] = "";
    time_t now = time(NULL);
    int code = check("SyncDevTime", password);
    if (!code) strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", localtime(&now));
    return finish("SyncDevTime", code ? code : 5, iRet, code ? NULL : stamp);
}

int SetMSDC(char *password, int *iRet) {
    char cmd[1024];
    int code = check("SetMSDC", password);
    if (!code && get("msdc_cmd", cmd, sizeof cmd) && system(cmd) != 0) code = 8;
    return finish("SetMSDC", code ? code : 7, iRet, NULL);
}
