"""The words people read at the dock: bay states, finding and alert codes, page labels (zh-CN, en)."""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")

# One table. Keys: "state.<bay state>", "code.<finding or alert code>", "label.<page word>",
# "ha.<Home Assistant device or entity name>".
# A code the product emits without a sentence here fails tests/test_ui_i18n.py.
TEXT: dict[str, tuple[str, str]] = {
    # bay states (SPEC 6)
    "state.empty": ("空闲", "Empty"),
    "state.identifying": ("正在识别", "Identifying"),
    "state.validating": ("正在检查", "Checking"),
    "state.offloading": ("正在导出", "Offloading"),
    "state.charging": ("正在充电", "Charging"),
    "state.ready": ("就绪", "Ready"),
    "state.fault": ("故障", "Fault"),
    "state.unknown": ("未知", "Unknown"),
    # recorder and bay findings
    "code.assign_timeout": (
        "警员分配未在限定时间内完成",
        "The officer assignment did not run in time",
    ),
    "code.awaiting_ack": (
        "视频已导出，等待中心确认后从记录仪删除",
        "Clips offloaded; waiting for the central server before deleting them from the recorder",
    ),
    "code.bad_device_id": ("记录仪编号缺失或无效", "The recorder's ID is missing or invalid"),
    "code.bad_event_line": (
        "记录仪日志有一行无法读取，已跳过",
        "A line of the recorder's log could not be read and was skipped",
    ),
    "code.bad_event_log": ("记录仪日志无法读取", "The recorder's log could not be read"),
    "code.bad_file_name": ("有文件名不符合规范", "A file name does not follow the naming rule"),
    "code.bad_recorder_json": ("记录仪信息文件损坏", "The recorder's information file is damaged"),
    "code.recorder_json_repaired": (
        "记录仪信息文件中有异常数值，已忽略",
        "The recorder's information file holds impossible values; they were ignored",
    ),
    "code.event_line_repaired": (
        "记录仪日志有一行含异常数值，已忽略这些数值",
        "A line of the recorder's log holds impossible values; they were ignored",
    ),
    "code.battery_charging": ("电池电量不足，正在充电", "Battery low; charging"),
    "code.battery_impossible": (
        "电池电量读数异常，请检修记录仪",
        "The battery reading is impossible; have the recorder checked",
    ),
    "code.battery_unknown": ("记录仪未报告电池电量", "The recorder did not report its battery"),
    "code.clip_missing": ("记录仪上的文件已不在", "A file is no longer on the recorder"),
    "code.clock_corrected": ("记录仪时间已校准", "The recorder's clock was corrected"),
    "code.clock_drift": ("记录仪时间有偏差", "The recorder's clock is off"),
    "code.clock_impossible": (
        "记录仪时间明显错误",
        "The recorder's clock shows an impossible time",
    ),
    "code.clock_set_failed": ("记录仪时间校准失败", "The recorder's clock could not be set"),
    "code.clock_source_mismatch": (
        "记录仪按本机时区校时，与记录仪时区不同",
        "The recorder is set to the dock's time zone, not the recorders' zone",
    ),
    "code.clock_unsupported": ("该记录仪不支持校时", "This recorder's clock cannot be set"),
    "code.clock_unsynced": (
        "采集站时间未同步，记录仪时间未校准",
        "The dock's clock is not synchronised; recorder clocks are not set",
    ),
    "code.clock_unverifiable": ("记录仪无法报告时间", "The recorder cannot report its clock"),
    "code.delete_failed": (
        "记录仪上的文件删除失败",
        "A file could not be deleted from the recorder",
    ),
    "code.disk_full": (
        "采集站存储空间已满，暂停导出",
        "The dock's storage is full; offloading stopped",
    ),
    "code.event_unreadable": ("记录仪有一条事件无法读取", "A recorder event could not be read"),
    "code.huge_file": (
        "有文件大小异常，未导出",
        "A file has an impossible size and was not offloaded",
    ),
    "code.identity_mismatch": ("记录仪编号前后不一致", "The recorder reports two different IDs"),
    "code.internal_error": ("采集站内部错误，请联系管理员", "Internal error in the dock; call IT"),
    "code.io_error": ("读取记录仪出错", "Error reading the recorder"),
    "code.led_failed": ("仓位指示灯无法控制", "A bay light cannot be set"),
    "code.media_interrupted": ("视频中间有中断", "A video has a break in it"),
    "code.media_truncated": ("视频不完整", "A video is incomplete"),
    "code.media_undecodable": ("视频无法解码", "A video cannot be decoded"),
    "code.mount_failed": ("无法读取记录仪存储", "The recorder's storage could not be opened"),
    "code.no_media_dir": ("记录仪上没有视频文件夹", "The recorder has no media folder"),
    "code.no_recorder_json": ("记录仪信息文件缺失", "The recorder's information file is missing"),
    "code.not_regular": (
        "记录仪上有异常文件，已跳过",
        "An unusual file on the recorder was skipped",
    ),
    "code.path_refused": (
        "记录仪上有不安全的文件路径，已拒绝",
        "An unsafe file path on the recorder was refused",
    ),
    "code.probe_skipped": ("该文件不是音视频，未检查", "Not a media file; not checked"),
    "code.probe_unsupported": ("该音频格式未检查", "This audio format was not checked"),
    "code.recorder_fault": ("记录仪报告故障", "The recorder reports a fault"),
    "code.recorder_file_replaced": (
        "记录仪上的文件已被替换，未删除，作为新文件导出",
        "A file on the recorder was replaced: not deleted, offloaded as a new clip",
    ),
    "code.recorder_gone": ("记录仪已拔出", "The recorder was removed"),
    "code.storage_impossible": (
        "记录仪存储读数异常",
        "The recorder's storage reading is impossible",
    ),
    "code.storage_low": ("记录仪剩余空间不足", "Little free space left on the recorder"),
    "code.storage_unknown": ("记录仪未报告存储容量", "The recorder did not report its storage"),
    "code.symlink_refused": ("记录仪上有链接文件，已拒绝", "A link on the recorder was refused"),
    "code.too_deep": (
        "记录仪文件夹层级过深，已跳过",
        "A folder on the recorder is nested too deep; skipped",
    ),
    "code.too_large": ("文件过大，已拒绝", "A file is too large; refused"),
    "code.too_many_files": ("记录仪上文件过多", "Too many files on the recorder"),
    "code.unreadable_file": ("有文件无法读取", "A file could not be read"),
    "code.unsupported_filesystem": (
        "记录仪存储格式不受支持",
        "The recorder's storage format is not supported",
    ),
    "code.verify_failed": (
        "导出后校验失败，视频保留在记录仪上",
        "Check after offload failed; the clips stay on the recorder",
    ),
    "code.zero_byte_file": ("有空文件", "A file is empty"),
    "code.zfy_ambiguous": (
        "无法区分两台记录仪，请重新插入",
        "Two recorders cannot be told apart; dock this one again",
    ),
    "code.zfy_bad_password": (
        "记录仪密码格式错误，请联系管理员",
        "The recorder password is malformed; call IT",
    ),
    "code.zfy_bad_text": (
        "记录仪信息含无法识别的文字",
        "Recorder information contains unreadable text",
    ),
    "code.zfy_clock_after_switch": (
        "记录仪已切换模式，无法校时",
        "The recorder changed mode; its clock cannot be set",
    ),
    "code.zfy_library_unusable": (
        "记录仪驱动无法加载，请联系管理员",
        "The recorder driver cannot be loaded; call IT",
    ),
    "code.zfy_password_unreadable": (
        "记录仪密码文件无法读取，请联系管理员",
        "The recorder password file cannot be read; call IT",
    ),
    "code.zfy_sdk_error": ("记录仪通信出错", "Error talking to the recorder"),
    "code.zfy_storage_timeout": ("记录仪存储未出现", "The recorder's storage did not appear"),
    "code.zfy_bad_resolution": (
        "记录仪报告的分辨率异常",
        "The recorder reports an impossible resolution",
    ),
    "code.zfy_clock_set_failed": ("记录仪拒绝校时", "The recorder refused to set its clock"),
    "code.zfy_connect_failed": ("无法连接记录仪", "Cannot connect to the recorder"),
    "code.zfy_mass_storage_failed": (
        "记录仪无法切换到存储模式",
        "The recorder could not switch to storage mode",
    ),
    "code.zfy_not_reachable": (
        "记录仪已切换为移动磁盘，无法写入警员信息",
        "The recorder no longer answers the SDK; the officer was not written",
    ),
    "code.zfy_officer_text": (
        "警员信息含无法写入的文字",
        "The officer details contain text that cannot be written",
    ),
    "code.zfy_other_recorder": (
        "连接到的是另一台记录仪，请单独插入后重新分配",
        "Another recorder answered; dock this one alone and assign it again",
    ),
    "code.zfy_resolution_unread": (
        "无法读取记录仪分辨率",
        "The recorder's resolution could not be read",
    ),
    "code.zfy_sdk_busy": (
        "另一台记录仪正在通信，请稍后重新分配",
        "Another recorder is talking to the dock; assign again shortly",
    ),
    "code.zfy_write_not_kept": (
        "警员信息写入后未保存",
        "The recorder did not keep the officer details written to it",
    ),
    "code.zfy_write_unsupported": (
        "该记录仪不支持写入警员信息",
        "This recorder cannot take officer details",
    ),
    "code.zfy_wrong_password": (
        "记录仪密码错误，请联系管理员",
        "The recorder refused the password; call IT",
    ),
    "code.zfy_waiting_for_sdk": (
        "正在等待另一台记录仪完成",
        "Waiting for another recorder to finish",
    ),
    # dock alerts
    "code.deletes_held": (
        "未配置中心公钥，记录仪上的视频暂不删除",
        "Central's key is not enrolled: nothing is deleted from recorders",
    ),
    "code.disk_low": ("采集站存储空间不足", "The dock's storage is running low"),
    "code.late_offload": ("有视频超过规定时间才导出", "A clip was offloaded later than allowed"),
    "code.mqtt_auth_failed": (
        "采集站无法登录中心服务器",
        "The dock cannot log in to the central server",
    ),
    "code.mqtt_subscribe_refused": (
        "中心服务器拒绝了采集站的订阅",
        "The central server refused one of the dock's subscriptions",
    ),
    "code.receipt_invalid": (
        "中心回执无效，视频未确认",
        "The central server's receipt is invalid; the clip is not confirmed",
    ),
    "code.sync_backlog": ("上传积压", "Uploads are backing up"),
    "code.sync_failed": ("上传失败，稍后重试", "An upload failed; it will be retried"),
    # page labels
    "label.title": ("执法记录仪采集站", "Body-worn camera dock"),
    "label.bay": ("仓位", "Bay"),
    "label.officer": ("警员", "Officer"),
    "label.device": ("设备", "Device"),
    "label.battery": ("电量", "Battery"),
    "label.eta": ("剩余约", "about"),
    "label.queue": ("待上传", "Upload queue"),
    "label.clips": ("个文件", "clips"),
    "label.last_upload": ("最近上传", "Last upload"),
    "label.never": ("无", "none"),
    "label.key": ("本机密钥指纹", "Dock key"),
    "label.alerts": ("告警：", "Alerts: "),
    "label.sep": ("；", "; "),
    "label.no_alerts": ("无告警", "No alerts"),
    "label.oldest": ("最早", "oldest"),
    "label.not_running": ("采集站服务未运行", "The dock service is not running"),
    "label.unreachable": ("无法获取状态", "Status unavailable"),
    "label.updated": ("更新于", "Updated"),
    "label.fault_prefix": ("故障：", "Fault: "),
    "label.seconds": ("秒", "s"),
    "label.minutes": ("分钟", "min"),
    "label.hours": ("小时", "h"),
    # Home Assistant discovery (agent/ui/ha_discovery.py): devices and entity names
    "ha.dock_device": ("采集站 {dock}", "Dock {dock}"),
    "ha.dock_model": ("执法记录仪采集站", "Body-worn recorder dock"),
    "ha.bay_device": ("{dock} 仓位 {n}", "{dock} bay {n}"),
    "ha.bay_model": ("采集站仓位", "Dock bay"),
    "ha.queue_clips": ("待上传文件", "Sync queue"),
    "ha.oldest_unsynced_age": ("最早未上传时长", "Oldest unsynced clip"),
    "ha.disk_free": ("剩余存储空间", "Disk free"),
    "ha.custody_seq": ("保管日志条目", "Custody log entries"),
    "ha.problem": ("告警", "Problem"),
    "ha.clock_synced": ("时钟已同步", "Clock synchronised"),
    "ha.connectivity": ("连接", "Connection"),
    "ha.state": ("状态", "State"),
    "ha.officer": ("警员", "Officer"),
    "ha.battery": ("电量", "Battery"),
    "ha.progress": ("导出进度", "Offload progress"),
}


def text(key: str, language: str) -> str:
    """The words for `key` in `language`; the key's last part when the table has none."""
    pair = TEXT.get(key)
    if pair is None:
        return key.rpartition(".")[2]
    return pair[LANGUAGES.index(language)] if language in LANGUAGES else pair[0]


def table(language: str) -> dict[str, str]:
    """The whole table in one language (embedded in the status page)."""
    return {key: text(key, language) for key in TEXT}
