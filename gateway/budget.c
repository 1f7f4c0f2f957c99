/* budget: the retry token bucket of gateway/budget.h (lock-free, see there). */
#include "gateway/budget.h"

#include "core/loop.h"

#define CAP_MILLI     ((int64_t)BUDGET_CAP * 1000)
#define NS_PER_MILLI  (1000000000ull / (BUDGET_REFILL_PER_S * 1000ull))

void budget_init(struct budget *b, uint64_t now_ns)
{
    atomic_store(&b->milli, CAP_MILLI);
    atomic_store(&b->last_ns, now_ns);
    atomic_store(&b->exhausted, 0);
}

static void add(struct budget *b, int64_t d)
{
    int64_t cur = atomic_load_explicit(&b->milli, memory_order_relaxed);
    for (;;) {
        int64_t next = cur + d > CAP_MILLI ? CAP_MILLI : cur + d;
        if (next == cur) return;
        if (atomic_compare_exchange_weak_explicit(&b->milli, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

static void refill(struct budget *b, uint64_t now_ns)
{
    uint64_t last = atomic_load_explicit(&b->last_ns, memory_order_relaxed);
    if (now_ns <= last) return;
    uint64_t n = (now_ns - last) / NS_PER_MILLI;
    if (n == 0) return;
    if (n > (uint64_t)CAP_MILLI) n = (uint64_t)CAP_MILLI; /* a long pause refills it, no more */
    uint64_t next = n == (uint64_t)CAP_MILLI ? now_ns : last + n * NS_PER_MILLI;
    if (atomic_compare_exchange_strong_explicit(&b->last_ns, &last, next, memory_order_relaxed,
                                                memory_order_relaxed))
        add(b, (int64_t)n);
}

void budget_first(struct budget *b, uint32_t percent, uint64_t now_ns)
{
    refill(b, now_ns);
    add(b, (int64_t)percent * 10);
}

bool budget_take(struct budget *b, uint64_t now_ns)
{
    refill(b, now_ns);
    int64_t cur = atomic_load_explicit(&b->milli, memory_order_relaxed);
    while (cur >= 1000)
        if (atomic_compare_exchange_weak_explicit(&b->milli, &cur, cur - 1000,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    atomic_fetch_add_explicit(&b->exhausted, 1, memory_order_relaxed);
    return false;
}

int64_t budget_milli(struct budget *b, uint64_t now_ns)
{
    refill(b, now_ns);
    return atomic_load_explicit(&b->milli, memory_order_relaxed);
}

uint64_t budget_exhausted(const struct budget *b)
{
    return atomic_load_explicit(&b->exhausted, memory_order_relaxed);
}

static struct budget g_budget;
static atomic_flag g_started = ATOMIC_FLAG_INIT;
static _Atomic bool g_ready;

struct budget *budget_process(void)
{
    if (!atomic_load_explicit(&g_ready, memory_order_acquire)) {
        if (!atomic_flag_test_and_set(&g_started)) {
            budget_init(&g_budget, mono_ns());
            atomic_store_explicit(&g_ready, true, memory_order_release);
        }
        while (!atomic_load_explicit(&g_ready, memory_order_acquire)) {
        }
    }
    return &g_budget;
}
