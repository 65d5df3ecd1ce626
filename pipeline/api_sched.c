/* Public scheduler entry points: the supported classes (for a tool's --help and its own checks)
 * and a dry run of building one, so a tool can refuse a bad name or option before loading a
 * model. */
#include <cjson/cJSON.h>

#include "../core/config.h"
#include "../core/error.h"
#include "../schedulers/scheduler.h"

int sd_scheduler_count(void) {
    const sched_info *info;
    return sched_list(&info);
}

const sd_scheduler_info *sd_scheduler_get(int i) {
    const sched_info *info;
    const int n = sched_list(&info);
    if (i < 0 || i >= n) return NULL;
    return &info[i];
}

sd_status sd_scheduler_check(const char *name, const char *overrides_json) {
    if (!name || !*name) return sd_set_error(SD_ERR_ARG, "no scheduler name given");
    cJSON *overrides = NULL;
    if (overrides_json && *overrides_json) {
        SD_TRY(sd_json_parse(overrides_json, "scheduler options", &overrides));
        if (!cJSON_IsObject(overrides)) {
            cJSON_Delete(overrides);
            return sd_set_error(SD_ERR_ARG, "scheduler options must be a JSON object");
        }
    }
    sd_scheduler *s = NULL;
    const sd_status st = sched_create(&s, name, NULL, overrides);
    sched_free(s);
    cJSON_Delete(overrides);
    return st;
}
