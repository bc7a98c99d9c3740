/* A fake GA/T 947 recorder SDK for tests, with the signatures vendors ship (cdecl), as the
 * 恒安 H8 LibBodycam.dll binding declares them (Edward125/H6, H6上位机软件/subfun.cs,
 * "以下为公安部的相关函数"):
 *   void *Init_Device(char *IDCode, int *iRet);            a handle, NULL on failure
 *   void *GetIDCode(char **IDCode, int *iRet);             the IDCode the SDK expects
 *   int GetZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet);
 *   int WriteZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet);
 *   int SyncDevTime(char *sPwd, int *iRet);
 *   int ReadDeviceBatteryDumpEnergy(int *battery, char *sPwd, int *iRet);
 *   int ReadDeviceResolution(int *w, int *h, char *sPwd, int *iRet);  (not with -DNO_RESOLUTION)
 *   int SetMSDC(char *sPwd, int *iRet);
 *
 * Behaviour comes from the control file named by $FAKE_ZFY_CONTROL, re-read on every call,
 * one key=value a line (values are raw bytes, so GBK text goes in as it is):
 *   id_code=...      the IDCode Init_Device accepts (another one: NULL, iRet 2)
 *   password=...     the password the "recorder" accepts (wrong one: iRet 4)
 *   serial= user_no= user_name= unit_no= unit_name=     ZFY_INFO fields
 *   store=PATH       the recorder's memory: WriteZFYInfo keeps ZFY_INFO there, and GetZFYInfo
 *                    answers with it while its cSerial is the serial above
 *   battery=NN       ReadDeviceBatteryDumpEnergy's answer
 *   resolution=WxH   ReadDeviceResolution's answer
 *   fail_<Function>=CODE   make that function fail with iRet CODE (2, 6, 8, ...)
 *   msdc_cmd=...     shell command SetMSDC runs to "re-enumerate as mass storage"
 *   log=PATH         every call appends "<Function> <iRet> <string argument> [detail]"
 * With $FAKE_ZFY_SCRIBBLE set, every function overwrites the first byte of each string
 * argument after reading it, as careless vendor code does (the prototypes are not const).
 */
#include <stdint.h>
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

static char id_code_answer[64];

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

static void log_call(const char *func, int code, const char *arg, const char *detail) {
    char path[512];
    FILE *fh;
    if (!get("log", path, sizeof path)) return;
    fh = fopen(path, "a");
    if (!fh) return;
    fprintf(fh, "%s %d %s%s%s\n", func, code, arg, detail ? " " : "", detail ? detail : "");
    fclose(fh);
}

/* Read a string argument into `copy`, then scribble on the caller's buffer when asked to. */
static void take(char *arg, char *copy, size_t size) {
    snprintf(copy, size, "%s", arg ? arg : "(null)");
    if (arg && getenv("FAKE_ZFY_SCRIBBLE")) arg[0] = '#';
}

/* Common checks: a forced failure, then the password. Returns 0 to go on, else the iRet. */
static int check(const char *func, const char *password) {
    char key[64], value[256];
    snprintf(key, sizeof key, "fail_%s", func);
    if (get(key, value, sizeof value)) return atoi(value);
    if (!get("password", value, sizeof value)) value[0] = '\0';
    if (strcmp(password, value) != 0) return 4;
    return 0;
}

static int finish(const char *func, int code, int *iRet, const char *arg, const char *detail) {
    *iRet = code;
    log_call(func, code, arg, detail);
    return code % 2 == 1 ? 1 : 0;
}

void *Init_Device(char *IDCode, int *iRet) {
    char got[256], want[256];
    int code = 1;
    take(IDCode, got, sizeof got);
    if (get("fail_Init_Device", want, sizeof want)) code = atoi(want);
    else if (!get("id_code", want, sizeof want) || strcmp(got, want) != 0) code = 2;
    finish("Init_Device", code, iRet, got, NULL);
    /* A handle whose low 32 bits are zero: read as an int it would look like failure. */
    return code == 1 ? (void *)(uintptr_t)(sizeof(void *) > 4 ? (uintptr_t)1 << 32 : 1) : NULL;
}

void *GetIDCode(char **IDCode, int *iRet) {
    if (!get("id_code", id_code_answer, sizeof id_code_answer)) id_code_answer[0] = '\0';
    *IDCode = id_code_answer;
    finish("GetIDCode", 1, iRet, id_code_answer, NULL);
    return (void *)id_code_answer;
}

static void field(const char *key, char *out, size_t size) {
    char value[256];
    memset(out, 0, size);
    if (get(key, value, sizeof value)) memcpy(out, value, strnlen(value, size)); /* may fill */
}

static int stored(ZFY_INFO *info) {
    char path[512];
    FILE *fh;
    size_t got;
    if (!get("store", path, sizeof path) || !(fh = fopen(path, "rb"))) return 0;
    got = fread(info, 1, sizeof *info, fh);
    fclose(fh);
    return got == sizeof *info;
}

int GetZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet) {
    char pwd[256];
    ZFY_INFO memory;
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("GetZFYInfo", pwd);
    if (!code) {
        field("serial", info->cSerial, sizeof info->cSerial);
        if (stored(&memory) && memcmp(memory.cSerial, info->cSerial, sizeof memory.cSerial) == 0) {
            *info = memory;
        } else {
            field("user_no", info->userNo, sizeof info->userNo);
            field("user_name", info->userName, sizeof info->userName);
            field("unit_no", info->unitNo, sizeof info->unitNo);
            field("unit_name", info->unitName, sizeof info->unitName);
        }
    }
    return finish("GetZFYInfo", code ? code : 3, iRet, pwd, NULL);
}

int WriteZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet) {
    char pwd[256], path[512];
    FILE *fh;
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("WriteZFYInfo", pwd);
    if (!code && get("store", path, sizeof path)) {
        fh = fopen(path, "wb");
        if (!fh || fwrite(info, 1, sizeof *info, fh) != sizeof *info) code = 10;
        if (fh) fclose(fh);
    }
    return finish("WriteZFYInfo", code ? code : 3, iRet, pwd, NULL);
}

int ReadDeviceBatteryDumpEnergy(int *battery, char *sPwd, int *iRet) {
    char pwd[256], value[32];
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("ReadDeviceBatteryDumpEnergy", pwd);
    if (!code) *battery = get("battery", value, sizeof value) ? atoi(value) : 0;
    return finish("ReadDeviceBatteryDumpEnergy", code ? code : 3, iRet, pwd, NULL);
}

#ifndef NO_RESOLUTION
int ReadDeviceResolution(int *w, int *h, char *sPwd, int *iRet) {
    char pwd[256], value[64];
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("ReadDeviceResolution", pwd);
    if (!code && (!get("resolution", value, sizeof value) || sscanf(value, "%dx%d", w, h) != 2))
        code = 10;
    return finish("ReadDeviceResolution", code ? code : 3, iRet, pwd, NULL);
}
#endif

int SyncDevTime(char *sPwd, int *iRet) {
    char pwd[256], stamp[32] = "";
    time_t now = time(NULL);
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("SyncDevTime", pwd);
    if (!code) strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", localtime(&now));
    return finish("SyncDevTime", code ? code : 5, iRet, pwd, code ? NULL : stamp);
}

int SetMSDC(char *sPwd, int *iRet) {
    char pwd[256], cmd[1024];
    int code;
    take(sPwd, pwd, sizeof pwd);
    code = check("SetMSDC", pwd);
    if (!code && get("msdc_cmd", cmd, sizeof cmd) && system(cmd) != 0) code = 8;
    return finish("SetMSDC", code ? code : 7, iRet, pwd, NULL);
}
