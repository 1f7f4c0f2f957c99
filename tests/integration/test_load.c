/*
 * Many concurrent requests through the real gateway: 200 requests from 20
 * client threads at once, every one answered 200 with its own merged data
 * (no response crossed with another request's).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define THREADS             20
#define REQUESTS_PER_THREAD 10

static struct h_env env;

struct worker {
    pthread_t thread;
    int index;
    int ok;
    char failure[256];
};

/* Checks that the merged body belongs to request id. */
static bool body_matches(const struct h_resp *r, int id)
{
    char want[32];
    snprintf(want, sizeof want, "%d", id);
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(r->json, "user");
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(r->json, "recs");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(r->json, "n");
    const char *uid = h_json_str(user, "id");
    const char *rfor = h_json_str(recs, "for");
    const cJSON *nv = cJSON_GetObjectItemCaseSensitive(n, "n");
    return uid && strcmp(uid, want) == 0 && rfor && strcmp(rfor, want) == 0 && cJSON_IsNumber(nv) &&
           nv->valueint == id;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < REQUESTS_PER_THREAD; i++) {
        int id = w->index * 1000 + i;
        char path[64];
        snprintf(path, sizeof path, "/api/load/%d", id);
        struct h_resp r;
        h_get(env.gw.base, path, NULL, &r);
        if (r.status == 200 && body_matches(&r, id))
            w->ok++;
        else if (!w->failure[0])
            snprintf(w->failure, sizeof w->failure, "%s: status %ld (curl %d) body %.120s", path,
                     r.status, r.curl_code, r.body);
        h_resp_free(&r);
    }
    return NULL;
}

static void concurrent_requests_all_succeed_with_their_own_data(void **state)
{
    (void)state;
    struct worker w[THREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++) {
        w[i].index = i + 1;
        assert_int_equal(pthread_create(&w[i].thread, NULL, run_worker, &w[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        ok += w[i].ok;
        if (w[i].failure[0]) fprintf(stderr, "thread %d: %s\n", i, w[i].failure);
    }
    assert_int_equal(ok, THREADS * REQUESTS_PER_THREAD);
    /* three backend calls per request reached the backend */
    cJSON *log = h_mock_log(&env.mock, NULL);
    assert_int_equal(cJSON_GetArraySize(log), 3 * THREADS * REQUESTS_PER_THREAD);
    cJSON_Delete(log);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_requests_all_succeed_with_their_own_data),
    };
    return H_GROUP_RUN("integration/load", tests, &env, h_conf_standard);
}
