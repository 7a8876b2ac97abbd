/* upgen: a closed-loop HTTP/1.1 upload generator for bench_ingest.py.
 *
 *   upgen HOST PORT PATH HEAD_FILE TOKENS_FILE CONNECTIONS SECONDS [cycle]
 *
 * Each of CONNECTIONS threads keeps one keep-alive connection with one request in
 * flight: POST PATH with the body HEAD .. "session" .. <token> (msgpack), the token
 * taken in turn from TOKENS_FILE (one per line). The body goes out with one writev of
 * the request head, HEAD_FILE's bytes and a small per-token tail: no per-request copy
 * or allocation of the body in user space. wrk with a Lua script builds a new body
 * string per request; with a distinct token in each, LuaJIT allocates (mmap) and frees
 * (munmap) it every time, which made wrk, not the server, the bottleneck at 400 KB.
 *
 * When the tokens run out, a thread stops and counts one non-2xx answer (the run is
 * then invalid), unless "cycle" (start over: for a server that ignores the token).
 * Prints one JSON line, the same fields as upload.lua's:
 *   {"requests":..,"duration_us":..,"non_2xx":..,"socket_errors":..,"p50_us":..,"p99_us":..}
 * Requests answered after SECONDS are not counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static const char *path, *host;
static int port, cycle;
static char *head;
static size_t head_len;
static char **tokens;
static size_t n_tokens;
static atomic_size_t next_token;
static double deadline;

typedef struct {
    uint32_t *lat;
    size_t n, cap;
    long non_2xx, socket_errors;
} result_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static char *slurp(const char *file, size_t *len) {
    FILE *f = fopen(file, "rb");
    if (!f) die(file);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die(file);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

static int connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, struct iovec *iov, int cnt) {
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Reads one response; returns its status code, or -1 on a broken connection. */
static int read_response(int fd, char *buf, size_t cap) {
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == cap - 1) return -1;
        ssize_t n = read(fd, buf + have, cap - 1 - have);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    long length = 0;
    for (char *p = buf; p < end; p++) {
        if ((*p == '\n') && strncasecmp(p + 1, "content-length:", 15) == 0) {
            length = strtol(p + 16, NULL, 10);
            break;
        }
    }
    long left = length - (long)(have - (size_t)(end + 4 - buf));
    while (left > 0) {
        ssize_t n = read(fd, buf, left < (long)cap ? (size_t)left : cap);
        if (n <= 0) return -1;
        left -= n;
    }
    return status;
}

static void *worker(void *arg) {
    result_t *r = arg;
    char buf[65536], req[512], tail[512];
    int fd = -1;
    while (now_s() < deadline) {
        size_t i = atomic_fetch_add(&next_token, 1);
        if (i >= n_tokens) {
            if (!cycle) {
                r->non_2xx++;
                break;
            }
            i %= n_tokens;
        }
        const char *tok = tokens[i];
        size_t tl = strlen(tok);
        size_t k = 0;
        tail[k++] = (char)0xa7;
        memcpy(tail + k, "session", 7);
        k += 7;
        if (tl < 32) {
            tail[k++] = (char)(0xa0 + tl);
        } else if (tl < 256) {
            tail[k++] = (char)0xd9;
            tail[k++] = (char)tl;
        } else {
            tail[k++] = (char)0xda;
            tail[k++] = (char)(tl >> 8);
            tail[k++] = (char)(tl & 0xff);
        }
        if (k + tl > sizeof tail) die("token too long");
        memcpy(tail + k, tok, tl);
        k += tl;
        int rl = snprintf(req, sizeof req,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/msgpack\r\n"
                          "Accept: application/msgpack\r\nContent-Length: %zu\r\n\r\n",
                          path, host, port, head_len + k);
        struct iovec iov[3] = {{req, (size_t)rl}, {head, head_len}, {tail, k}};
        if (fd < 0 && (fd = connect_one()) < 0) {
            r->socket_errors++;
            continue;
        }
        double t0 = now_s();
        int status = write_all(fd, iov, 3) == 0 ? read_response(fd, buf, sizeof buf) : -1;
        double t1 = now_s();
        if (status < 0) {
            r->socket_errors++;
            close(fd);
            fd = -1;
            continue;
        }
        if (t1 > deadline) break;
        if (status < 200 || status >= 300) r->non_2xx++;
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 4096;
            r->lat = realloc(r->lat, r->cap * sizeof *r->lat);
            if (!r->lat) die("realloc");
        }
        r->lat[r->n++] = (uint32_t)((t1 - t0) * 1e6);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH HEAD_FILE TOKENS_FILE CONNECTIONS SECONDS [cycle]\n",
                argv[0]);
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    path = argv[3];
    head = slurp(argv[4], &head_len);
    size_t tok_len;
    char *all = slurp(argv[5], &tok_len);
    int conns = atoi(argv[6]);
    double seconds = atof(argv[7]);
    cycle = argc > 8 && strcmp(argv[8], "cycle") == 0;
    if (conns < 1 || seconds <= 0) {
        fprintf(stderr, "connections and seconds must be positive\n");
        return 2;
    }
    for (char *p = all; *p; p++) n_tokens += *p == '\n';
    tokens = calloc(n_tokens + 1, sizeof *tokens);
    n_tokens = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) tokens[n_tokens++] = line;
    if (n_tokens == 0) {
        fprintf(stderr, "no tokens\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "host must be an IPv4 address\n");
        return 2;
    }
    pthread_t *threads = calloc((size_t)conns, sizeof *threads);
    result_t *results = calloc((size_t)conns, sizeof *results);
    double start = now_s();
    deadline = start + seconds;
    for (int i = 0; i < conns; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&threads[i], &attr, worker, &results[i]) != 0) die("pthread_create");
        pthread_attr_destroy(&attr);
    }
    size_t total = 0;
    long non_2xx = 0, socket_errors = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(threads[i], NULL);
        total += results[i].n;
        non_2xx += results[i].non_2xx;
        socket_errors += results[i].socket_errors;
    }
    double elapsed = now_s() - start;
    if (elapsed > seconds) elapsed = seconds;
    uint32_t *lat = malloc((total + 1) * sizeof *lat);
    size_t k = 0;
    for (int i = 0; i < conns; i++) {
        memcpy(lat + k, results[i].lat, results[i].n * sizeof *lat);
        k += results[i].n;
    }
    qsort(lat, total, sizeof *lat, cmp_u32);
    uint32_t p50 = total ? lat[(size_t)(0.50 * (double)(total - 1))] : 0;
    uint32_t p99 = total ? lat[(size_t)(0.99 * (double)(total - 1))] : 0;
    printf("{\"requests\":%zu,\"duration_us\":%.0f,\"non_2xx\":%ld,\"socket_errors\":%ld,"
           "\"p50_us\":%u,\"p99_us\":%u}\n",
           total, elapsed * 1e6, non_2xx, socket_errors, p50, p99);
    return 0;
}
