/* Example reward plugin in C: 1.0 when the completion contains a keyword, else 0.0; completions
 * longer than `max_tokens` tokens score 0 (a length cap).
 * Options (JSON): {"keyword": "import", "max_tokens": 0}  (max_tokens 0 = no cap).
 * Build: cc -shared -fPIC -O2 -I../../../include keyword_reward.c -o libkeyword_reward.so */
#include "recode_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const RecodePluginInfo INFO = {RECODE_PLUGIN_ABI_VERSION, RECODE_PLUGIN_KIND_REWARD, "c-keyword", "0.1.0",
                                      "1 if the completion contains `keyword` (and fits in `max_tokens`)"};

const RecodePluginInfo* recode_plugin_info(void) { return &INFO; }

/* Minimal option reading for flat JSON objects: the value after "key": (no escapes in strings). */
static const char* find_value(const char* json, const char* key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char* p = strstr(json, pat);
    if (!p) return NULL;
    p = strchr(p + strlen(pat), ':');
    if (!p) return NULL;
    for (p++; *p == ' ' || *p == '\t' || *p == '\n'; p++) {}
    return p;
}

/* Copies the string option into buf; returns 0 when absent, 1 when found, -1 when malformed. */
static int read_string(const char* json, const char* key, char* buf, size_t cap) {
    const char* p = find_value(json, key);
    if (!p) return 0;
    if (*p != '"') return -1;
    const char* end = strchr(p + 1, '"');
    if (!end || (size_t)(end - p - 1) >= cap) return -1;
    memcpy(buf, p + 1, (size_t)(end - p - 1));
    buf[end - p - 1] = 0;
    return 1;
}

static int parse(const char* json, char* keyword, size_t cap, long* max_tokens, char* err, size_t err_len) {
    strcpy(keyword, "import");
    *max_tokens = 0;
    if (read_string(json, "keyword", keyword, cap) < 0 || keyword[0] == 0) {
        snprintf(err, err_len, "option `keyword` must be a non-empty string shorter than %zu bytes", cap);
        return 1;
    }
    const char* p = find_value(json, "max_tokens");
    if (p) {
        char* end;
        *max_tokens = strtol(p, &end, 10);
        if (end == p || *max_tokens < 0) {
            snprintf(err, err_len, "option `max_tokens` must be a non-negative integer");
            return 1;
        }
    }
    return 0;
}

int recode_plugin_check_options(const char* options_json, char* err, size_t err_len) {
    char keyword[256];
    long max_tokens;
    return parse(options_json, keyword, sizeof keyword, &max_tokens, err, err_len);
}

/* Substring search on a non-NUL-terminated slice. */
static int contains(const char* hay, size_t n, const char* needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0) return 1;
    return 0;
}

int recode_reward_score(const char* options_json, size_t n, const RecodeRewardItem* items, double* out_scores,
                        char* err, size_t err_len) {
    char keyword[256];
    long max_tokens;
    if (parse(options_json, keyword, sizeof keyword, &max_tokens, err, err_len)) return 1;
    for (size_t i = 0; i < n; i++) {
        const RecodeRewardItem* it = &items[i];
        int too_long = max_tokens > 0 && it->completion_tokens > (size_t)max_tokens;
        out_scores[i] = (!too_long && contains(it->completion.ptr, it->completion.len, keyword)) ? 1.0 : 0.0;
    }
    return 0;
}
