/*
 * test_tls: server.tls through the real gateway with certificates the
 * openssl CLI makes at test time: HTTPS with TLS 1.2 and 1.3 (verified
 * against the test CA file), TLS 1.1 refused by the server (the client
 * allows it), plain HTTP and a stalled handshake do not hold the one
 * worker, SIGHUP with a new pair serves it (no failed request while
 * reloading under load), SIGHUP with a mismatched pair keeps the old one
 * and says so.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static char dir[64], conf_path[128], log_path[128], cert[128], key[128];
static int port;
static pid_t gw;

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void make_pair(const char *name, const char *cn)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
             "-subj /CN=%s -addext subjectAltName=IP:127.0.0.1 -keyout %s/%s.key -out %s/%s.crt "
             "2>/dev/null",
             cn, dir, name, dir, name);
    assert_int_equal(system(cmd), 0);
}

/* Puts pair name in place (cert and key files the config names). */
static void install(const char *name, const char *key_of)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s/%s.crt %s.tmp && mv %s.tmp %s && cp %s/%s.key %s.tmp && mv "
             "%s.tmp %s", dir, name, cert, cert, cert, dir, key_of, key, key, key);
    assert_int_equal(system(cmd), 0);
}

/* One HTTPS GET /healthz verified against ca; tls: CURL_SSLVERSION_*
 * (min|max). Returns the HTTP status, or -CURLcode. */
static long https_get(const char *ca_name, long tls)
{
    char ca[128], url[128];
    path_of(ca, sizeof ca, ca_name);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/healthz", port);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h_bound_ms(15000));
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_CIPHER_LIST, "DEFAULT:@SECLEVEL=0"); /* TLS 1.1 allowed here */
    if (tls) curl_easy_setopt(c, CURLOPT_SSLVERSION, tls);
    CURLcode rc = curl_easy_perform(c);
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? st : -(long)rc;
}

static bool log_has(const char *needle, int times)
{
    FILE *f = fopen(log_path, "r");
    if (!f) return false;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n >= times;
}

static bool wait_log(const char *needle, int times)
{
    return H_POLL_UNTIL(log_has(needle, times), 20000);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_tls.XXXXXX");
    if (!mkdtemp(dir)) return -1;
    make_pair("one", "one");
    make_pair("two", "two");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cat %s/one.crt %s/two.crt > %s/both.crt", dir, dir, dir);
    if (system(cmd)) return -1;
    path_of(cert, sizeof cert, "server.crt");
    path_of(key, sizeof key, "server.key");
    path_of(conf_path, sizeof conf_path, "gateway.json");
    path_of(log_path, sizeof log_path, "gateway.log");
    install("one", "one");
    port = free_port();
    FILE *f = fopen(conf_path, "w");
    fprintf(f,
            "{\"server\": {\"listen\": \"127.0.0.1:%d\", \"workers\": 1, \"header_timeout_ms\": "
            "60000, \"tls\": {\"cert\": \"%s\", \"key\": \"%s\"}},"
            " \"endpoints\": [{\"name\": \"e\", \"path\": \"/e\", \"backends\": [{\"name\": \"b\","
            " \"url\": \"http://127.0.0.1:1/\"}]}]}",
            port, cert, key);
    fclose(f);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    char *argv[] = {(char *)h_gateway_bin(), "-c", conf_path, NULL};
    gw = h_spawn(argv, fd, fd);
    close(fd);
    if (gw < 0) return -1;
    bool exited = false;
    bool up = H_POLL_UNTIL(
        https_get("one.crt", 0) == 200 || (exited = waitpid(gw, NULL, WNOHANG) == gw), 20000);
    return up && !exited ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = 0;
    kill(gw, SIGTERM);
    waitpid(gw, &st, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void test_versions(void **state)
{
    (void)state;
    assert_int_equal(https_get("one.crt", CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2),
                     200);
    assert_int_equal(https_get("one.crt", CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3),
                     200);
    long r = https_get("one.crt", CURL_SSLVERSION_TLSv1_1 | CURL_SSLVERSION_MAX_TLSv1_1);
    assert_true(r < 0); /* refused by the server: the client offered it */
    assert_int_equal(https_get("two.crt", 0), -(long)CURLE_PEER_FAILED_VERIFICATION);
}

/* Plain HTTP to the TLS port gets no HTTP answer, and a client stalled
 * before its handshake does not hold the only worker. */
static void test_plain_and_stalled(void **state)
{
    (void)state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int stalled = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(stalled, (struct sockaddr *)&a, sizeof a), 0);
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(plain, (struct sockaddr *)&a, sizeof a), 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(plain, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    struct pollfd p = {.fd = plain, .events = POLLIN};
    assert_int_equal(poll(&p, 1, (int)h_bound_ms(15000)), 1);
    char buf[512];
    ssize_t n = recv(plain, buf, sizeof buf - 1, 0);
    if (n > 0) {
        buf[n] = '\0';
        assert_null(strstr(buf, "HTTP/1.1 200"));
    }
    close(plain);
    assert_int_equal(https_get("one.crt", 0), 200); /* while one stalls */
    close(stalled);
}

struct load {
    atomic_bool stop;
    atomic_int ok, failed;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    while (!atomic_load(&l->stop)) {
        long st = https_get("both.crt", 0);
        if (st == 200)
            atomic_fetch_add(&l->ok, 1);
        else
            atomic_fetch_add(&l->failed, 1);
    }
    return NULL;
}

/* SIGHUP with a new pair: the new certificate is served (verified against
 * its own file alone), with requests running throughout and none failed. */
static void test_reload(void **state)
{
    (void)state;
    struct load l = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, load_main, &l), 0);
    const char *order[] = {"two", "one", "two"};
    for (int i = 0; i < 3; i++) {
        install(order[i], order[i]);
        kill(gw, SIGHUP);
        assert_true(wait_log("TLS certificate reloaded", i + 1));
        char ca[32];
        snprintf(ca, sizeof ca, "%s.crt", order[i]);
        assert_int_equal(https_get(ca, 0), 200);
    }
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    print_message("requests during the reloads: %d ok, %d failed\n", atomic_load(&l.ok),
                  atomic_load(&l.failed));
    assert_int_equal(atomic_load(&l.failed), 0);
    assert_true(atomic_load(&l.ok) > 0);
}

/* SIGHUP with a mismatched pair: logged, the running one ("two") kept. */
static void test_bad_reload(void **state)
{
    (void)state;
    install("one", "two");
    kill(gw, SIGHUP);
    assert_true(wait_log("does not match the certificate", 1));
    assert_true(wait_log("keeping the running configuration", 1));
    assert_int_equal(https_get("two.crt", 0), 200);
    assert_int_equal(https_get("one.crt", 0), -(long)CURLE_PEER_FAILED_VERIFICATION);
    install("two", "two");
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_plain_and_stalled),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_bad_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
