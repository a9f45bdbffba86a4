/* Versions, status names, the default config and config errors, through the installed
 * header and library only. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

struct bad_case {
    const char *json;
    const char *path; /* expected err.argument */
    const char *needle; /* expected substring of err.message */
};

int main(void) {
    aepo_error err;
    size_t len = 0;
    char *buf;
    size_t i;
    static const struct bad_case bad[] = {
        {"{\"loss\": {\"bogus\": 1}}", "loss.bogus", "unknown key"},
        {"{\"loss\": {\"threads\": 1, \"threads\": 2}}", "loss.threads", "duplicate key"},
        {"{\"controller\": {\"mode\": 3}}", "controller.mode", "got the integer 3"},
        {"{\"loss\": {\"threads\": 2.0}}", "loss.threads", "integer keys do not accept reals"},
        {"{\"controller\": {\"t_high\": 0}}", "controller.t_high", "sampler.greedy"},
        {"{\"sampler\": {\"top_p\": 1.5}}", "sampler.top_p", "out of range"},
        {"{\"loss\": {\"clip_ratio_c\": }", "loss.clip_ratio_c", "line 1, column"},
        {"[1, 2]", "config", "top level must be a JSON object"},
        {"{\"schema_version\": 2}", "schema_version", "unsupported version 2"},
        {"{\"controller\": {\"adaptive\": {\"t_min\": 2.5}}}", "controller.adaptive.t_max", "t_min"},
    };

    printf("libaepo %s (number %d, ABI %d)\n", aepo_version_string(), (int)aepo_version_number(),
           (int)aepo_abi_version());
    CHECK(strcmp(aepo_version_string(), AEPO_VERSION_STRING) == 0);
    CHECK(aepo_version_number() == AEPO_VERSION_NUMBER);
    CHECK(aepo_abi_version() == AEPO_ABI_VERSION);
    CHECK(strcmp(aepo_status_name(AEPO_ERR_CONFIG), "AEPO_ERR_CONFIG") == 0);
    CHECK(strcmp(aepo_status_name(-7), "AEPO_ERR_UNKNOWN") == 0);

    /* Size query, then the real call. */
    CHECK_STATUS(aepo_default_config_json(NULL, 0, &len, &err), AEPO_OK, &err);
    CHECK(len > 100);
    buf = (char *)malloc(len + 1);
    CHECK_STATUS(aepo_default_config_json(buf, len, &len, &err), AEPO_ERR_BUFFER_TOO_SMALL, &err);
    CHECK(buf[0] == '\0');
    CHECK_STATUS(aepo_default_config_json(buf, len + 1, &len, &err), AEPO_OK, &err);
    CHECK(strlen(buf) == len);
    CHECK(strstr(buf, "\"clip_ratio_low\": 0.2,") != NULL);
    printf("default config:\n%s", buf);
    CHECK_STATUS(aepo_config_validate(buf, len, &err), AEPO_OK, &err);
    CHECK(err.status == AEPO_OK && err.message[0] == '\0' && err.index == -1);
    free(buf);

    /* NULL and empty mean defaults; err may be NULL. */
    CHECK_STATUS(aepo_config_validate(NULL, 0, NULL), AEPO_OK, &err);
    CHECK_STATUS(aepo_config_validate("", 0, &err), AEPO_OK, &err);

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(aepo_config_validate(bad[i].json, strlen(bad[i].json), &err), AEPO_ERR_CONFIG, &err);
        CHECK(err.status == AEPO_ERR_CONFIG);
        if (strcmp(err.argument, bad[i].path) != 0 || strstr(err.message, bad[i].needle) == NULL) {
            smoke_failed++;
            fprintf(stderr, "case %d: argument '%s' message '%s'; expected '%s' and '%s'\n", (int)i,
                    err.argument, err.message, bad[i].path, bad[i].needle);
        } else {
            smoke_passed++;
        }
    }
    /* Without err the status alone still tells. */
    CHECK_STATUS(aepo_config_validate("{", 1, NULL), AEPO_ERR_CONFIG, &err);

    /* The runtime report: JSON text under the size-query rule, with every section. */
    CHECK_STATUS(aepo_runtime_info(NULL, 0, &len, &err), AEPO_OK, &err);
    buf = (char *)malloc(len + 1);
    CHECK_STATUS(aepo_runtime_info(buf, len + 1, &len, &err), AEPO_OK, &err);
    CHECK(strlen(buf) == len && buf[0] == '{' && buf[len - 1] == '}');
    CHECK(strstr(buf, "\"cpu\": {") != NULL && strstr(buf, "\"blas\": {") != NULL);
    CHECK(strstr(buf, "\"kernels\": {") != NULL && strstr(buf, "\"warnings\": [") != NULL);
    CHECK(strstr(buf, "\"version\": \"" AEPO_VERSION_STRING "\"") != NULL);
    printf("runtime info:\n%s\n", buf);
    free(buf);
    return smoke_finish("smoke_config");
}
