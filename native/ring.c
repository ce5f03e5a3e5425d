/*
 * wsd native SPSC ring (see ring.h, docs/ring.md).
 *
 * Memory-ordering pairs used below (the labels recur in the comments):
 *   P1 producer: store-release head   <->  C1 consumer: load-acquire head
 *      Record bytes (header and payload) are written before P1, so a consumer
 *      that sees the new head through C1 sees every byte of those records.
 *      A producer that dies before P1 exposes nothing.
 *   C2 consumer: store-release tail   <->  P3 producer: load-acquire tail
 *      The consumer's reads of released records happen before the producer
 *      reuses (overwrites) that space.
 *   Wake-up (Dekker pattern, both sides have a seq_cst fence between a store
 *   and a load):
 *      sleeper: store waiting=1; FENCE; load index; sleep if nothing changed
 *      waker:   store index;     FENCE; load waiting; wake if set
 *   With the two fences at least one side sees the other's store, so either
 *   the sleeper sees the new index and does not sleep, or the waker sees the
 *   flag and writes the eventfd. P2/C4 and C3/P4 name those fences.
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define MAX_MSG_ABS 0x7FFFFFF8u /* keep lengths far from the PAD marker */

static inline uint64_t align8(uint64_t n) { return (n + 7u) & ~(uint64_t)7u; }
static inline uint64_t rec_size(uint64_t n) { return WSD_RING_REC_HDR + align8(n); }

static inline void put_hdr(wsd_ring *r, uint64_t pos, uint32_t len) {
    uint32_t h[2] = {len, 0u};
    memcpy(r->data + (pos & r->mask), h, sizeof h);
}

/* A FILL record: the unused rest of a posted span, `fill` payload bytes. */
static inline void put_fill(wsd_ring *r, uint64_t pos, uint32_t fill) {
    uint32_t h[2] = {WSD_RING_FILL_LEN, fill};
    memcpy(r->data + (pos & r->mask), h, sizeof h);
}

static inline void get_hdr(const wsd_ring *r, uint64_t pos, uint32_t *len, uint32_t *resv) {
    uint32_t h[2];
    memcpy(h, r->data + (pos & r->mask), sizeof h);
    *len = h[0];
    *resv = h[1];
}

static void wake(int fd) {
    if (fd >= 0) {
        uint64_t one = 1;
        /* EAGAIN means the counter is already non-zero: the sleeper will wake. */
        ssize_t w = write(fd, &one, sizeof one);
        (void)w;
    }
}

static int pid_alive(int32_t pid) {
    if (pid <= 0)
        return 0;
    if (kill((pid_t)pid, 0) == 0)
        return 1;
    return errno == EPERM;
}

uint64_t wsd_ring_map_size(uint64_t capacity) {
    if (capacity < WSD_RING_MIN_CAP || capacity > WSD_RING_MAX_CAP ||
        (capacity & (capacity - 1)) != 0)
        return 0;
    return WSD_RING_HDR_SIZE + capacity;
}

int wsd_ring_format(void *mem, uint64_t memsize, uint64_t capacity) {
    uint64_t need = wsd_ring_map_size(capacity);
    if (need == 0 || memsize < need)
        return -EINVAL;
    wsd_ring_hdr *h = (wsd_ring_hdr *)mem;
    memset(h, 0, sizeof *h);
    h->version = WSD_RING_VERSION;
    h->capacity = capacity;
    h->hdr_size = WSD_RING_HDR_SIZE;
    h->creator_pid = (int32_t)getpid();
    atomic_store_explicit(&h->head, 0, memory_order_relaxed);
    atomic_store_explicit(&h->tail, 0, memory_order_relaxed);
    /* Magic last: an attacher that load-acquires the magic sees the rest. */
    atomic_store_explicit(&h->magic, WSD_RING_MAGIC, memory_order_release);
    return 0;
}

int wsd_ring_open(wsd_ring *r, void *mem, uint64_t memsize) {
    memset(r, 0, sizeof *r);
    r->wake_consumer_fd = r->wake_producer_fd = -1;
    if (memsize < WSD_RING_HDR_SIZE)
        return -EINVAL;
    wsd_ring_hdr *h = (wsd_ring_hdr *)mem;
    if (atomic_load_explicit(&h->magic, memory_order_acquire) != WSD_RING_MAGIC)
        return -EBADMSG;
    if (h->version != WSD_RING_VERSION || h->hdr_size != WSD_RING_HDR_SIZE || h->flags != 0)
        return -EPROTO;
    uint64_t need = wsd_ring_map_size(h->capacity);
    if (need == 0 || memsize < need)
        return -EPROTO;
    r->hdr = h;
    r->data = (uint8_t *)mem + WSD_RING_HDR_SIZE;
    r->cap = h->capacity;
    r->mask = h->capacity - 1;
    return 0;
}

void wsd_ring_set_fds(wsd_ring *r, int wake_consumer_fd, int wake_producer_fd) {
    r->wake_consumer_fd = wake_consumer_fd;
    r->wake_producer_fd = wake_producer_fd;
}

void wsd_ring_forked(wsd_ring *r) {
    r->is_producer = r->is_consumer = 0;
    r->p_mode = 0;
}

uint32_t wsd_ring_max_msg(const wsd_ring *r) {
    uint64_t m = r->cap - WSD_RING_REC_HDR;
    return m > MAX_MSG_ABS ? MAX_MSG_ABS : (uint32_t)m;
}

int wsd_ring_claim(wsd_ring *r, int role) {
    wsd_ring_hdr *h = r->hdr;
    _Atomic int32_t *pidp = role == 1 ? &h->producer_pid : &h->consumer_pid;
    _Atomic uint32_t *closedp = role == 1 ? &h->producer_closed : &h->consumer_closed;
    int32_t me = (int32_t)getpid();
    int32_t cur = atomic_load_explicit(pidp, memory_order_acquire);
    for (;;) {
        if (cur != 0 && cur != me && !atomic_load_explicit(closedp, memory_order_acquire) &&
            pid_alive(cur))
            return -EBUSY;
        if (atomic_compare_exchange_strong_explicit(pidp, &cur, me, memory_order_acq_rel,
                                                    memory_order_acquire))
            break;
    }
    atomic_store_explicit(closedp, 0, memory_order_release);
    if (role == 1) {
        /* We become the only writer of head; a previous producer's last
         * publish is visible through this acquire. */
        r->p_head = r->p_pend = atomic_load_explicit(&h->head, memory_order_acquire);
        r->p_tail = atomic_load_explicit(&h->tail, memory_order_acquire);
        r->p_mode = 0;
        r->is_producer = 1;
    } else {
        r->c_tail = atomic_load_explicit(&h->tail, memory_order_acquire);
        r->c_head = atomic_load_explicit(&h->head, memory_order_acquire);
        r->is_consumer = 1;
    }
    return 0;
}

#define NEED_PRODUCER(r)                                  \
    do {                                                  \
        if (unlikely(!(r)->is_producer)) {                \
            int rc_ = wsd_ring_claim((r), 1);             \
            if (rc_)                                      \
                return rc_;                               \
        }                                                 \
    } while (0)

#define NEED_CONSUMER(r)                                  \
    do {                                                  \
        if (unlikely(!(r)->is_consumer)) {                \
            int rc_ = wsd_ring_claim((r), 2);             \
            if (rc_)                                      \
                return rc_;                               \
        }                                                 \
    } while (0)

void wsd_ring_close(wsd_ring *r) {
    if (!r->hdr)
        return;
    wsd_ring_hdr *h = r->hdr;
    if (r->is_producer) {
        /* Release: everything published before the close is visible to a
         * consumer that acquires producer_closed. */
        atomic_store_explicit(&h->producer_closed, 1, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_exchange_explicit(&h->consumer_waiting, 0, memory_order_acq_rel))
            wake(r->wake_consumer_fd);
        r->is_producer = 0;
    }
    if (r->is_consumer) {
        atomic_store_explicit(&h->consumer_closed, 1, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_exchange_explicit(&h->producer_waiting, 0, memory_order_acq_rel))
            wake(r->wake_producer_fd);
        r->is_consumer = 0;
    }
}

/* ------------------------------------------------------------ producer */

/* Is [.., end) within capacity of the consumer's tail? Refreshes the cached
 * tail only when the cached value says no. */
static inline int room(wsd_ring *r, uint64_t end) {
    if (likely(end - r->p_tail <= r->cap))
        return 1;
    /* P3: pairs with C2. */
    r->p_tail = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
    return end - r->p_tail <= r->cap;
}

static void publish_head(wsd_ring *r, uint64_t newhead) {
    wsd_ring_hdr *h = r->hdr;
    /* P1: pairs with C1. All record bytes below newhead were written before. */
    atomic_store_explicit(&h->head, newhead, memory_order_release);
    r->p_head = newhead;
    /* P2: pairs with the consumer's fence C4 in arm_readable. */
    atomic_thread_fence(memory_order_seq_cst);
    if (unlikely(atomic_load_explicit(&h->consumer_waiting, memory_order_relaxed))) {
        /* Exchange so that one sleep gets one eventfd write, not one per
         * message published while the consumer is still waking up. */
        if (atomic_exchange_explicit(&h->consumer_waiting, 0, memory_order_acq_rel))
            wake(r->wake_consumer_fd);
    }
}

static void publish(wsd_ring *r, uint64_t newhead) {
    r->p_pend = newhead;
    r->p_mode = 0;
    publish_head(r, newhead);
}

int64_t wsd_ring_reserve(wsd_ring *r, uint32_t n) {
    NEED_PRODUCER(r);
    if (unlikely(n > wsd_ring_max_msg(r)))
        return -EMSGSIZE;
    if (unlikely(atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed)))
        return -EPIPE;
    uint64_t pos = r->p_head; /* drops any earlier pending reservation */
    r->p_pend = pos;
    r->p_mode = 0;
    uint64_t rec = rec_size(n);
    uint64_t off = pos & r->mask;
    if (off + rec > r->cap) {
        /* Never split a message: a PAD record fills the rest of the lap.
         * It is published at once, so that a message larger than the room
         * after the PAD can still go in once the consumer has skipped it. */
        uint64_t padlen = r->cap - off;
        if (!room(r, pos + padlen))
            return -EAGAIN;
        put_hdr(r, pos, WSD_RING_PAD_LEN);
        publish(r, pos + padlen);
        pos += padlen;
    }
    if (!room(r, pos + rec))
        return -EAGAIN;
    r->p_rec = pos;
    r->p_pend = pos + rec;
    r->p_mode = 1;
    return (int64_t)(WSD_RING_HDR_SIZE + (pos & r->mask) + WSD_RING_REC_HDR);
}

int wsd_ring_commit(wsd_ring *r, uint32_t nbytes) {
    if (!r->is_producer || r->p_mode != 1)
        return -EINVAL;
    uint64_t rec = rec_size(nbytes);
    if (rec > r->p_pend - r->p_rec)
        return -EINVAL;
    put_hdr(r, r->p_rec, nbytes);
    publish(r, r->p_rec + rec);
    return 0;
}

void wsd_ring_cancel(wsd_ring *r) {
    r->p_pend = r->p_head;
    r->p_mode = 0;
}

/* Place up to count messages after the published head. With offs, their
 * payload offsets are stored; with src, the payloads are copied from src
 * (packed back to back); with srcs, from srcs[i]. Returns how many were
 * placed; p_pend is the end. */
static int place_batch(wsd_ring *r, const uint32_t *sizes, uint32_t count, uint64_t *offs,
                       const uint8_t *src, const void *const *srcs) {
    uint32_t maxmsg = wsd_ring_max_msg(r);
    uint64_t pos = r->p_head;
    uint32_t k = 0;
    r->p_pend = pos;
    r->p_mode = 0;
    while (k < count) {
        uint32_t n = sizes[k];
        if (unlikely(n > maxmsg)) {
            if (k == 0)
                return -EMSGSIZE;
            break;
        }
        uint64_t rec = rec_size(n);
        uint64_t off = pos & r->mask;
        if (off + rec > r->cap) {
            uint64_t padlen = r->cap - off;
            if (room(r, pos + padlen + rec)) {
                put_hdr(r, pos, WSD_RING_PAD_LEN); /* published with the batch */
                pos += padlen;
            } else if (k == 0 && room(r, pos + padlen)) {
                /* Nothing pending yet: publish the PAD alone (see reserve). */
                put_hdr(r, pos, WSD_RING_PAD_LEN);
                publish(r, pos + padlen);
                pos += padlen;
                if (!room(r, pos + rec))
                    break;
            } else {
                break;
            }
        } else if (!room(r, pos + rec)) {
            break;
        }
        put_hdr(r, pos, n);
        if (offs)
            offs[k] = WSD_RING_HDR_SIZE + (pos & r->mask) + WSD_RING_REC_HDR;
        if (src) {
            memcpy(r->data + (pos & r->mask) + WSD_RING_REC_HDR, src, n);
            src += n;
        } else if (srcs) {
            memcpy(r->data + (pos & r->mask) + WSD_RING_REC_HDR, srcs[k], n);
        }
        pos += rec;
        k++;
    }
    r->p_pend = pos;
    r->p_nres = k;
    r->p_mode = k ? 2 : 0;
    return (int)k;
}

int wsd_ring_reserve_batch(wsd_ring *r, const uint32_t *sizes, uint32_t count, uint64_t *offs) {
    NEED_PRODUCER(r);
    if (unlikely(atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed)))
        return -EPIPE;
    return place_batch(r, sizes, count, offs, NULL, NULL);
}

int wsd_ring_commit_batch(wsd_ring *r, uint32_t k) {
    if (!r->is_producer || (k > 0 && r->p_mode != 2) || (r->p_mode == 2 && k > r->p_nres))
        return -EINVAL;
    if (k == 0) {
        wsd_ring_cancel(r);
        return 0;
    }
    if (k == r->p_nres) {
        publish(r, r->p_pend);
        return 0;
    }
    /* Partial commit: walk the first k records (we wrote their headers). */
    uint64_t pos = r->p_head;
    for (uint32_t j = 0; j < k;) {
        uint32_t len, resv;
        get_hdr(r, pos, &len, &resv);
        if (len == WSD_RING_PAD_LEN) {
            pos += r->cap - (pos & r->mask);
            continue;
        }
        pos += rec_size(len);
        j++;
    }
    publish(r, pos);
    return 0;
}

int64_t wsd_ring_post(wsd_ring *r, uint32_t n) {
    NEED_PRODUCER(r);
    if (unlikely(n > wsd_ring_max_msg(r)))
        return -EMSGSIZE;
    if (unlikely(atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed)))
        return -EPIPE;
    if (r->p_mode != 3) { /* drops a single / batch reservation */
        r->p_pend = r->p_head;
        r->p_nres = 0;
        r->p_mode = 3;
    }
    uint64_t pos = r->p_pend;
    uint64_t rec = rec_size(n);
    uint64_t off = pos & r->mask;
    if (off + rec > r->cap) {
        uint64_t padlen = r->cap - off;
        if (r->p_nres == 0) {
            /* Nothing posted: publish the PAD alone (see reserve). */
            if (!room(r, pos + padlen))
                return -EAGAIN;
            put_hdr(r, pos, WSD_RING_PAD_LEN);
            publish_head(r, pos + padlen);
            r->p_pend = pos + padlen;
            pos += padlen;
        } else {
            /* Published together with the span before it. */
            if (!room(r, pos + padlen + rec))
                return -EAGAIN;
            put_hdr(r, pos, WSD_RING_PAD_LEN);
            pos += padlen;
        }
    }
    if (!room(r, pos + rec))
        return -EAGAIN; /* (a PAD published above is simply skipped by the consumer) */
    put_hdr(r, pos, n); /* the posted size, until commit_posted writes the real length */
    r->p_pend = pos + rec;
    r->p_nres++;
    return (int64_t)(WSD_RING_HDR_SIZE + (pos & r->mask) + WSD_RING_REC_HDR);
}

int wsd_ring_commit_posted(wsd_ring *r, const uint32_t *lens, uint32_t k) {
    if (k == 0)
        return 0;
    if (!r->is_producer || r->p_mode != 3 || k > r->p_nres)
        return -EINVAL;
    /* Pass 1: check every length against its span (nothing written yet). */
    uint64_t pos = r->p_head;
    for (uint32_t j = 0; j < k;) {
        uint32_t len, resv;
        get_hdr(r, pos, &len, &resv);
        if (len == WSD_RING_PAD_LEN) {
            pos += r->cap - (pos & r->mask);
            continue;
        }
        if (lens[j] > len)
            return -EINVAL;
        pos += rec_size(len);
        j++;
    }
    /* Pass 2: real lengths, and a FILL record over each span's unused rest. */
    pos = r->p_head;
    for (uint32_t j = 0; j < k;) {
        uint32_t len, resv;
        get_hdr(r, pos, &len, &resv);
        if (len == WSD_RING_PAD_LEN) {
            pos += r->cap - (pos & r->mask);
            continue;
        }
        uint64_t rec = rec_size(len), used = rec_size(lens[j]);
        put_hdr(r, pos, lens[j]);
        if (rec > used) /* both are multiples of 8: at least 8 bytes, room for the FILL header */
            put_fill(r, pos + used, (uint32_t)(rec - used - WSD_RING_REC_HDR));
        pos += rec;
        j++;
    }
    r->p_nres -= k;
    if (r->p_nres == 0) {
        publish(r, pos); /* pos == p_pend */
    } else {
        publish_head(r, pos);
    }
    return 0;
}

uint32_t wsd_ring_posted(const wsd_ring *r) {
    return r->p_mode == 3 ? r->p_nres : 0;
}

int wsd_ring_push(wsd_ring *r, const void *data, uint32_t n) {
    int64_t off = wsd_ring_reserve(r, n);
    if (off < 0)
        return off == -EAGAIN ? 0 : (int)off;
    memcpy((uint8_t *)r->hdr + off, data, n);
    put_hdr(r, r->p_rec, n);
    publish(r, r->p_pend);
    return 1;
}

int wsd_ring_push_packed(wsd_ring *r, const void *data, const uint32_t *lens, uint32_t count) {
    NEED_PRODUCER(r);
    if (unlikely(atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed)))
        return -EPIPE;
    int k = place_batch(r, lens, count, NULL, (const uint8_t *)data, NULL);
    if (k > 0)
        publish(r, r->p_pend);
    return k;
}

int wsd_ring_push_iov(wsd_ring *r, const void *const *bufs, const uint32_t *lens, uint32_t count) {
    NEED_PRODUCER(r);
    if (unlikely(atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed)))
        return -EPIPE;
    int k = place_batch(r, lens, count, NULL, NULL, bufs);
    if (k > 0)
        publish(r, r->p_pend);
    return k;
}

/* ------------------------------------------------------------ consumer */

static void store_tail(wsd_ring *r, uint64_t pos) {
    wsd_ring_hdr *h = r->hdr;
    /* C2: pairs with P3. Our reads of the records below pos are done. */
    atomic_store_explicit(&h->tail, pos, memory_order_release);
    r->c_tail = pos;
    /* C3: pairs with the producer's fence P4 in arm_writable. */
    atomic_thread_fence(memory_order_seq_cst);
    if (unlikely(atomic_load_explicit(&h->producer_waiting, memory_order_relaxed))) {
        if (atomic_exchange_explicit(&h->producer_waiting, 0, memory_order_acq_rel))
            wake(r->wake_producer_fd);
    }
}

/* Make sure c_head is beyond pos if the producer has published more.
 * Returns 1 if there is something at pos, 0 if empty, -EPROTO if the
 * shared head is impossible. */
static inline int more(wsd_ring *r, uint64_t pos) {
    if (likely(pos != r->c_head))
        return 1;
    /* C1: pairs with P1. */
    uint64_t h = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
    if (unlikely(h - r->c_tail > r->cap))
        return -EPROTO;
    r->c_head = h;
    return pos != h;
}

/* Decode the record at pos (pos < c_head). Returns its length, or
 * WSD_RING_PAD_LEN with *next set past a PAD or FILL record (both are
 * skipped); -1 for a corrupt record. */
static inline int64_t decode(const wsd_ring *r, uint64_t pos, uint64_t *next) {
    uint32_t len, resv;
    uint64_t off = pos & r->mask;
    get_hdr(r, pos, &len, &resv);
    if (len == WSD_RING_PAD_LEN) {
        uint64_t padlen = r->cap - off;
        if (pos + padlen - r->c_tail > r->c_head - r->c_tail)
            return -1;
        *next = pos + padlen;
        return WSD_RING_PAD_LEN;
    }
    if (len == WSD_RING_FILL_LEN) {
        /* The unused rest of a posted span: skipped like a PAD. */
        uint64_t fill = WSD_RING_REC_HDR + (uint64_t)resv;
        if ((resv & 7u) != 0 || off + fill > r->cap || pos + fill - r->c_tail > r->c_head - r->c_tail)
            return -1;
        *next = pos + fill;
        return WSD_RING_PAD_LEN;
    }
    uint64_t rec = rec_size(len);
    if (resv != 0 || len > wsd_ring_max_msg(r) || off + rec > r->cap ||
        pos + rec - r->c_tail > r->c_head - r->c_tail)
        return -1;
    *next = pos + rec;
    return len;
}

static int peek_impl(wsd_ring *r, uint32_t max_n, uint64_t *offs, const void **ptrs,
                     uint32_t *lens) {
    uint64_t pos = r->c_tail;
    uint32_t k = 0;
    while (k < max_n) {
        int m = more(r, pos);
        if (m <= 0) {
            if (m < 0)
                return m;
            break;
        }
        uint64_t next;
        int64_t len = decode(r, pos, &next);
        if (len < 0)
            return -EPROTO;
        if (len == WSD_RING_PAD_LEN) {
            pos = next;
            if (k == 0)
                store_tail(r, pos); /* a leading PAD is consumed at once */
            continue;
        }
        if (offs)
            offs[k] = WSD_RING_HDR_SIZE + (pos & r->mask) + WSD_RING_REC_HDR;
        else
            ptrs[k] = r->data + (pos & r->mask) + WSD_RING_REC_HDR;
        lens[k] = (uint32_t)len;
        k++;
        pos = next;
    }
    return (int)k;
}

int wsd_ring_peek(wsd_ring *r, uint32_t max_n, uint64_t *offs, uint32_t *lens) {
    NEED_CONSUMER(r);
    return peek_impl(r, max_n, offs, NULL, lens);
}

int wsd_ring_peek_ptrs(wsd_ring *r, uint32_t max_n, const void **ptrs, uint32_t *lens) {
    NEED_CONSUMER(r);
    return peek_impl(r, max_n, NULL, ptrs, lens);
}

int wsd_ring_release(wsd_ring *r, uint32_t n) {
    NEED_CONSUMER(r);
    uint64_t pos = r->c_tail;
    uint32_t j = 0;
    while (j < n) {
        int m = more(r, pos);
        if (m <= 0)
            return m < 0 ? m : -EINVAL; /* releasing more than was published */
        uint64_t next;
        int64_t len = decode(r, pos, &next);
        if (len < 0)
            return -EPROTO;
        if (len != WSD_RING_PAD_LEN)
            j++;
        pos = next;
    }
    /* Skip PADs that follow, so the producer gets the space back now. */
    while (pos != r->c_head) {
        uint64_t next;
        if (decode(r, pos, &next) != WSD_RING_PAD_LEN)
            break;
        pos = next;
    }
    if (pos != r->c_tail)
        store_tail(r, pos);
    return 0;
}

int wsd_ring_pop_packed(wsd_ring *r, void *out, uint64_t outcap, uint32_t *lens, uint32_t max_n) {
    NEED_CONSUMER(r);
    uint8_t *dst = (uint8_t *)out;
    uint64_t used = 0;
    uint64_t pos = r->c_tail;
    uint32_t k = 0;
    int rc = 0;
    while (k < max_n) {
        int m = more(r, pos);
        if (m <= 0) {
            rc = m;
            break;
        }
        uint64_t next;
        int64_t len = decode(r, pos, &next);
        if (len < 0) {
            rc = -EPROTO;
            break;
        }
        if (len != WSD_RING_PAD_LEN) {
            if (used + (uint64_t)len > outcap) {
                if (k == 0)
                    rc = -EMSGSIZE;
                break;
            }
            memcpy(dst + used, r->data + (pos & r->mask) + WSD_RING_REC_HDR, (size_t)len);
            used += (uint64_t)len;
            lens[k++] = (uint32_t)len;
        }
        pos = next;
    }
    if (pos != r->c_tail)
        store_tail(r, pos);
    if (k == 0 && rc < 0)
        return rc;
    return (int)k;
}

int64_t wsd_ring_pop_one(wsd_ring *r, void *out, uint32_t outcap, uint64_t *off) {
    NEED_CONSUMER(r);
    uint64_t o;
    uint32_t len;
    int k = wsd_ring_peek(r, 1, &o, &len);
    if (k <= 0)
        return k < 0 ? k : -EAGAIN;
    if (len > outcap) {
        *off = o; /* too big for out: the caller copies from o and releases */
        return len;
    }
    memcpy(out, (const uint8_t *)r->hdr + o, len);
    int rc = wsd_ring_release(r, 1);
    return rc < 0 ? rc : (int64_t)len;
}

/* ------------------------------------------------------------ readiness */

int wsd_ring_readable(wsd_ring *r) {
    NEED_CONSUMER(r);
    /* Closed first (acquire), then the index: a close is published after
     * the producer's last head store, so no final message is missed. */
    int closed = atomic_load_explicit(&r->hdr->producer_closed, memory_order_acquire) != 0;
    uint64_t off;
    uint32_t len;
    int n = wsd_ring_peek(r, 1, &off, &len);
    if (n < 0)
        return n;
    return n > 0 || closed;
}

int wsd_ring_writable(wsd_ring *r, uint32_t n) {
    NEED_PRODUCER(r);
    if (atomic_load_explicit(&r->hdr->consumer_closed, memory_order_acquire))
        return 1;
    int64_t off = wsd_ring_reserve(r, n);
    if (off >= 0) {
        wsd_ring_cancel(r);
        return 1;
    }
    return off == -EAGAIN ? 0 : (int)off;
}

int wsd_ring_spin_readable(wsd_ring *r, uint32_t spins) {
    for (uint32_t i = 0;; i++) {
        int rc = wsd_ring_readable(r);
        if (rc != 0 || i >= spins)
            return rc;
        /* Watch the head word itself between full checks. */
        for (int j = 0; j < 16; j++) {
            if (atomic_load_explicit(&r->hdr->head, memory_order_relaxed) != r->c_tail)
                break;
            cpu_relax();
        }
    }
}

int wsd_ring_spin_writable(wsd_ring *r, uint32_t n, uint32_t spins) {
    for (uint32_t i = 0;; i++) {
        int rc = wsd_ring_writable(r, n);
        if (rc != 0 || i >= spins)
            return rc;
        uint64_t t = r->p_tail;
        for (int j = 0; j < 16; j++) {
            if (atomic_load_explicit(&r->hdr->tail, memory_order_relaxed) != t)
                break;
            cpu_relax();
        }
    }
}

int wsd_ring_arm_readable(wsd_ring *r) {
    NEED_CONSUMER(r);
    atomic_store_explicit(&r->hdr->consumer_waiting, 1, memory_order_relaxed);
    /* C4: pairs with P2 (store head; fence; load consumer_waiting). */
    atomic_thread_fence(memory_order_seq_cst);
    int rc = wsd_ring_readable(r);
    if (rc != 0)
        atomic_store_explicit(&r->hdr->consumer_waiting, 0, memory_order_relaxed);
    return rc;
}

int wsd_ring_arm_writable(wsd_ring *r, uint32_t n) {
    NEED_PRODUCER(r);
    atomic_store_explicit(&r->hdr->producer_waiting, 1, memory_order_relaxed);
    /* P4: pairs with C3 (store tail; fence; load producer_waiting). */
    atomic_thread_fence(memory_order_seq_cst);
    int rc = wsd_ring_writable(r, n);
    if (rc != 0)
        atomic_store_explicit(&r->hdr->producer_waiting, 0, memory_order_relaxed);
    return rc;
}

void wsd_ring_disarm_readable(wsd_ring *r) {
    atomic_store_explicit(&r->hdr->consumer_waiting, 0, memory_order_relaxed);
}

void wsd_ring_disarm_writable(wsd_ring *r) {
    atomic_store_explicit(&r->hdr->producer_waiting, 0, memory_order_relaxed);
}

/* ------------------------------------------------------------ introspection */

uint64_t wsd_ring_head(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->head, memory_order_acquire);
}
uint64_t wsd_ring_tail(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
}
int32_t wsd_ring_producer_pid(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->producer_pid, memory_order_acquire);
}
int32_t wsd_ring_consumer_pid(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->consumer_pid, memory_order_acquire);
}
int wsd_ring_producer_closed(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->producer_closed, memory_order_acquire) != 0;
}
int wsd_ring_consumer_closed(const wsd_ring *r) {
    return atomic_load_explicit(&r->hdr->consumer_closed, memory_order_acquire) != 0;
}
