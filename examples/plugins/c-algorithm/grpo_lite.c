/* Example algorithm plugin in C: GRPO without KL.
 *  advantages: A = (r - group mean) / (unbiased group std + 1e-4), or r - mean with "normalize": false
 *  loss: token mean over the mini-batch of -min(rho*A, clip(rho, 1-eps, 1+eps)*A), rho = exp(logp - old)
 * Options (JSON): {"epsilon": 0.2, "normalize": true}
 * Build: cc -shared -fPIC -O2 -I../../../include grpo_lite.c -o libgrpo_lite.so -lm */
#include "recode_plugin.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const RecodePluginInfo INFO = {RECODE_PLUGIN_ABI_VERSION, RECODE_PLUGIN_KIND_ALGORITHM, "c-grpo-lite", "0.1.0",
                                      "GRPO advantages and clipped token-mean loss, no KL"};

const RecodePluginInfo* recode_plugin_info(void) { return &INFO; }

typedef struct {
    double epsilon;
    int normalize;
} Options;

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

static int parse(const char* json, Options* o, char* err, size_t err_len) {
    o->epsilon = 0.2;
    o->normalize = 1;
    const char* p = find_value(json, "epsilon");
    if (p) {
        char* end;
        o->epsilon = strtod(p, &end);
        if (end == p || !(o->epsilon >= 0.0 && o->epsilon < 1.0)) {
            snprintf(err, err_len, "option `epsilon` must be a number in [0, 1)");
            return 1;
        }
    }
    if ((p = find_value(json, "normalize"))) {
        if (strncmp(p, "true", 4) == 0) o->normalize = 1;
        else if (strncmp(p, "false", 5) == 0) o->normalize = 0;
        else {
            snprintf(err, err_len, "option `normalize` must be true or false");
            return 1;
        }
    }
    return 0;
}

int recode_plugin_check_options(const char* options_json, char* err, size_t err_len) {
    Options o;
    return parse(options_json, &o, err, err_len);
}

int recode_algo_needs_reference(const char* options_json) {
    (void)options_json;
    return 0;
}

int recode_algo_advantages(const char* options_json, const double* rewards, size_t n, size_t group_size, double* out,
                           char* err, size_t err_len) {
    Options o;
    if (parse(options_json, &o, err, err_len)) return 1;
    if (group_size == 0 || n % group_size) {
        snprintf(err, err_len, "%zu rewards do not split into groups of %zu", n, group_size);
        return 2;
    }
    for (size_t g = 0; g < n; g += group_size) {
        double mean = 0, var = 0;
        for (size_t i = g; i < g + group_size; i++) mean += rewards[i];
        mean /= (double)group_size;
        for (size_t i = g; i < g + group_size; i++) var += (rewards[i] - mean) * (rewards[i] - mean);
        double sd = group_size > 1 ? sqrt(var / (double)(group_size - 1)) : 0.0;
        for (size_t i = g; i < g + group_size; i++) {
            double a = rewards[i] - mean;
            /* equal rewards: exactly 0, whatever rounding the mean picked up */
            if (sd == 0.0) a = 0.0;
            out[i] = o.normalize ? a / (sd + 1e-4) : a;
        }
    }
    return 0;
}

int recode_algo_loss(const char* options_json, const RecodeLossBatch* b, double* out_loss, float* out_grad,
                     RecodeMetric* metrics, size_t metrics_cap, size_t* out_n_metrics, char* err, size_t err_len) {
    Options o;
    if (parse(options_json, &o, err, err_len)) return 1;
    double norm = b->norm_tokens > 1.0 ? b->norm_tokens : 1.0;
    double loss = 0, tokens = 0, clipped = 0;
    for (size_t i = 0; i < b->rows * b->cols; i++) {
        out_grad[i] = 0.0f;
        if (b->mask[i] == 0.0f) continue;
        double a = b->advantages[i / b->cols];
        double rho = exp((double)b->logp[i] - (double)b->old_logp[i]);
        double rc = rho < 1 - o.epsilon ? 1 - o.epsilon : (rho > 1 + o.epsilon ? 1 + o.epsilon : rho);
        double l1 = -rho * a, l2 = -rc * a;
        if (l2 > l1) { /* clipped branch: constant in logp */
            loss += l2 / norm;
            clipped += 1;
        } else {
            loss += l1 / norm;
            out_grad[i] = (float)(-rho * a / norm);
        }
        tokens += 1;
    }
    *out_loss = loss;
    *out_n_metrics = 0;
    if (metrics_cap >= 1) {
        snprintf(metrics[0].name, RECODE_METRIC_NAME_LEN, "clip_frac");
        metrics[0].value = tokens > 0 ? clipped / tokens : 0.0;
        *out_n_metrics = 1;
    }
    return 0;
}
