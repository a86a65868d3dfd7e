/* Misbehaving plugins for core/tests/plugin_abi.rs, one per -D combination:
 *  ABI=n, KIND=n             what recode_plugin_info() reports
 *  MODE=1 NaN score | 2 leaves the last score unwritten | 3 returns an error with a message
 *  NO_SCORE                  omits recode_reward_score
 *  ALGO with MODE=4 short advantages | 5 NaN gradient | 6 non-zero gradient on a masked token
 *  FINGERPRINT="..."         exports recode_model_plugin_abi_fingerprint */
#include "recode_plugin.h"
#include <math.h>
#include <stdio.h>

#ifndef ABI
#define ABI RECODE_PLUGIN_ABI_VERSION
#endif
#ifndef KIND
#define KIND RECODE_PLUGIN_KIND_REWARD
#endif
#ifndef MODE
#define MODE 0
#endif

static const RecodePluginInfo INFO = {ABI, KIND, "bad", "0.0.1", NULL};
const RecodePluginInfo* recode_plugin_info(void) { return &INFO; }

#ifndef NO_SCORE
int recode_reward_score(const char* o, size_t n, const RecodeRewardItem* items, double* out, char* err, size_t len) {
    (void)o, (void)items;
    if (MODE == 3) {
        snprintf(err, len, "judge server unreachable");
        return 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (MODE == 2 && i == n - 1) break;
        out[i] = (MODE == 1 && i == 1) ? NAN : 0.5;
    }
    return 0;
}
#endif

#ifdef ALGO
int recode_algo_needs_reference(const char* o) { (void)o; return 0; }

int recode_algo_advantages(const char* o, const double* r, size_t n, size_t g, double* out, char* err, size_t len) {
    (void)o, (void)g, (void)err, (void)len;
    for (size_t i = 0; i < n - (MODE == 4 ? 1 : 0); i++) out[i] = r[i];
    return 0;
}

int recode_algo_loss(const char* o, const RecodeLossBatch* b, double* loss, float* grad, RecodeMetric* m,
                     size_t cap, size_t* nm, char* err, size_t len) {
    (void)o, (void)m, (void)cap, (void)err, (void)len;
    *loss = 1.0;
    *nm = 0;
    for (size_t i = 0; i < b->rows * b->cols; i++) grad[i] = b->mask[i] != 0.0f ? 0.25f : (MODE == 6 ? 1.0f : 0.0f);
    if (MODE == 5) grad[0] = NAN;
    return 0;
}
#endif

#ifdef FINGERPRINT
const char* recode_model_plugin_abi_fingerprint(void) { return FINGERPRINT; }
#endif
