/*
 * wsd native SPSC ring: one producer, one consumer, variable-size messages.
 *
 * The shared part (struct wsd_ring_hdr followed by the data area) is plain
 * memory that two processes may map at different addresses (POSIX shm), so it
 * holds no pointers, only offsets and free-running 64-bit byte counters.
 * The private part (struct wsd_ring) is one per process and role: the mapping
 * address, cached copies of the other side's index, the pending reservation
 * and the eventfds used to wake the other side.
 *
 * Layout and memory-ordering argument: docs/ring.md.
 */
#ifndef WSD_RING_H
#define WSD_RING_H

#include <stdint.h>
#include <stddef.h>
#include <stdalign.h>
#include <stdatomic.h>

#define WSD_RING_MAGIC    0x52445357u /* bytes "WSDR" in memory (little-endian) */
#define WSD_RING_VERSION  1u
#define WSD_RING_HDR_SIZE 256u        /* data area starts here */
#define WSD_RING_REC_HDR  8u          /* u32 length + u32 reserved (zero) */
#define WSD_RING_PAD_LEN  0xFFFFFFFFu /* length value of a PAD record */
#define WSD_RING_FILL_LEN 0xFFFFFFFEu /* length value of a FILL record (reserved word = its payload bytes) */
#define WSD_RING_MIN_CAP  64u
#define WSD_RING_MAX_CAP  (1ull << 40)
#define WSD_RING_CACHELINE 64

/* Shared header: lives at offset 0 of the mapping. Every field is
 * little-endian native (the ring never leaves the machine). */
typedef struct wsd_ring_hdr {
    /* line 0: written once by the creator (magic last, with release), then
     * only the pid / closed words change, each by its own side. */
    _Atomic uint32_t magic;          /* WSD_RING_MAGIC once initialised */
    uint32_t version;                /* WSD_RING_VERSION */
    uint64_t capacity;               /* data bytes, power of two */
    uint32_t hdr_size;               /* WSD_RING_HDR_SIZE */
    uint32_t flags;                  /* reserved, zero */
    _Atomic int32_t producer_pid;    /* 0 = none yet; written by the producer */
    _Atomic int32_t consumer_pid;    /* 0 = none yet; written by the consumer */
    _Atomic uint32_t producer_closed;/* 1 = producer will send no more */
    _Atomic uint32_t consumer_closed;/* 1 = consumer will read no more */
    int32_t creator_pid;
    uint32_t reserved0;

    /* line 1: the producer's line. head is written by the producer only;
     * consumer_waiting is set by a consumer about to sleep and is read (and
     * cleared by exchange) by the producer after each publish, so the
     * producer's hot loop reads only its own line. */
    alignas(WSD_RING_CACHELINE) _Atomic uint64_t head;
    _Atomic uint32_t consumer_waiting;

    /* line 2: the consumer's line, mirror image. */
    alignas(WSD_RING_CACHELINE) _Atomic uint64_t tail;
    _Atomic uint32_t producer_waiting;

    /* line 3: reserved, keeps the data area off the index lines. */
    alignas(WSD_RING_CACHELINE) uint8_t reserved1[WSD_RING_CACHELINE];
} wsd_ring_hdr;

_Static_assert(sizeof(wsd_ring_hdr) == WSD_RING_HDR_SIZE, "header size");

/* Process-private handle. */
typedef struct wsd_ring {
    wsd_ring_hdr *hdr;
    uint8_t *data;        /* (uint8_t*)hdr + WSD_RING_HDR_SIZE */
    uint64_t cap, mask;
    /* producer side */
    uint64_t p_head;      /* last head we published */
    uint64_t p_tail;      /* cached tail (refreshed when space looks short) */
    uint64_t p_pend;      /* end of the pending reservation (== p_head: none) */
    uint64_t p_rec;       /* start of the single pending record */
    uint32_t p_nres;      /* messages in the pending batch / posted reservation */
    int p_mode;           /* 0 nothing pending, 1 single, 2 batch, 3 posted spans */
    /* consumer side */
    uint64_t c_tail;      /* last tail we published */
    uint64_t c_head;      /* cached head */
    /* wake-up */
    int wake_consumer_fd; /* eventfd the consumer sleeps on (readable_fd) */
    int wake_producer_fd; /* eventfd the producer sleeps on (writable_fd) */
    int is_producer, is_consumer; /* this handle has claimed the role */
} wsd_ring;

/* Error returns are negative errno values. */

/* Bytes to map for a ring of the given capacity (0 if capacity is invalid). */
uint64_t wsd_ring_map_size(uint64_t capacity);
/* Format fresh memory (zeroed or not) as an empty ring. */
int wsd_ring_format(void *mem, uint64_t memsize, uint64_t capacity);
/* Validate a formatted mapping and fill the private handle. */
int wsd_ring_open(wsd_ring *r, void *mem, uint64_t memsize);
void wsd_ring_set_fds(wsd_ring *r, int wake_consumer_fd, int wake_producer_fd);
/* Call in a forked child: the handle no longer owns either role. */
void wsd_ring_forked(wsd_ring *r);
/* Mark this handle's claimed sides closed and wake the peer. */
void wsd_ring_close(wsd_ring *r);
/* Largest message payload the ring accepts. */
uint32_t wsd_ring_max_msg(const wsd_ring *r);

/* ---- producer ---- */
/* Reserve room for one message of up to n bytes. Returns the payload offset
 * from the start of the mapping, -EAGAIN when there is no room now,
 * -EMSGSIZE when n can never fit, -EBUSY if another live process holds the
 * producer role. A new reserve drops any earlier uncommitted one. */
int64_t wsd_ring_reserve(wsd_ring *r, uint32_t n);
/* Publish the pending single reservation with its real length nbytes <= n. */
int wsd_ring_commit(wsd_ring *r, uint32_t nbytes);
/* Drop the pending reservation (nothing becomes visible). */
void wsd_ring_cancel(wsd_ring *r);
/* Reserve up to count messages of sizes[i] bytes; offs[i] receives payload
 * offsets. Returns how many were reserved (0..count) or -errno. */
int wsd_ring_reserve_batch(wsd_ring *r, const uint32_t *sizes, uint32_t count,
                           uint64_t *offs);
/* Publish the first k messages of the pending batch (k <= reserved). */
int wsd_ring_commit_batch(wsd_ring *r, uint32_t k);
/* Posted spans (a receive ring: spans handed out before their data arrives).
 * Reserve one more message of up to n bytes after the spans already posted;
 * nothing is published. Returns the payload offset, -EAGAIN when there is no
 * room now, -EMSGSIZE when n can never fit. reserve(), reserve_batch(),
 * push*() and cancel() drop every posted span. */
int64_t wsd_ring_post(wsd_ring *r, uint32_t n);
/* Publish the k oldest posted spans with their real lengths lens[i] (each <=
 * its posted size), with one head store. The unused rest of a span becomes a
 * FILL record the consumer skips. -EINVAL (nothing changed) if k is more than
 * is posted or a length is larger than its span. */
int wsd_ring_commit_posted(wsd_ring *r, const uint32_t *lens, uint32_t k);
/* Number of posted, uncommitted spans. */
uint32_t wsd_ring_posted(const wsd_ring *r);
/* Copy one message in and publish it: 1 on success, 0 when full, -errno. */
int wsd_ring_push(wsd_ring *r, const void *data, uint32_t n);
/* Copy count messages laid back to back in data (lengths lens[i]) and
 * publish them with one head store. Returns how many went in (a prefix). */
int wsd_ring_push_packed(wsd_ring *r, const void *data, const uint32_t *lens,
                         uint32_t count);
/* The same from count separate buffers. */
int wsd_ring_push_iov(wsd_ring *r, const void *const *bufs, const uint32_t *lens, uint32_t count);

/* ---- consumer ---- */
/* Fill up to max_n (offset, length) pairs of the oldest messages; returns
 * how many (0 when empty) or -EPROTO if the shared data is inconsistent. */
int wsd_ring_peek(wsd_ring *r, uint32_t max_n, uint64_t *offs, uint32_t *lens);
/* The same with pointers into this process's mapping. */
int wsd_ring_peek_ptrs(wsd_ring *r, uint32_t max_n, const void **ptrs, uint32_t *lens);
/* Give back the oldest n messages (-EINVAL if fewer are published). */
int wsd_ring_release(wsd_ring *r, uint32_t n);
/* Copy up to max_n messages back to back into out (at most outcap bytes),
 * lengths into lens, and release them. Returns the count, or -EMSGSIZE if the
 * oldest message alone is larger than outcap. */
int wsd_ring_pop_packed(wsd_ring *r, void *out, uint64_t outcap, uint32_t *lens,
                        uint32_t max_n);

/* Copy the oldest message into out and release it; returns its length.
 * If it is longer than outcap, nothing is copied or released: the length is
 * returned and *off gets its payload offset. -EAGAIN when empty. */
int64_t wsd_ring_pop_one(wsd_ring *r, void *out, uint32_t outcap, uint64_t *off);

/* ---- readiness and wake-up (protocol: docs/ring.md) ---- */
/* 1 if a message is waiting or the producer has closed. */
int wsd_ring_readable(wsd_ring *r);
/* 1 if a message of n bytes could be reserved now (or the consumer closed). */
int wsd_ring_writable(wsd_ring *r, uint32_t n);
/* Spin up to spins checks; returns 1 as soon as the condition holds. */
int wsd_ring_spin_readable(wsd_ring *r, uint32_t spins);
int wsd_ring_spin_writable(wsd_ring *r, uint32_t n, uint32_t spins);
/* Announce that the caller is about to sleep. Returns 1 (and withdraws the
 * announcement) if the condition already holds: then do not sleep. */
int wsd_ring_arm_readable(wsd_ring *r);
int wsd_ring_arm_writable(wsd_ring *r, uint32_t n);
void wsd_ring_disarm_readable(wsd_ring *r);
void wsd_ring_disarm_writable(wsd_ring *r);

/* ---- introspection ---- */
uint64_t wsd_ring_head(const wsd_ring *r);
uint64_t wsd_ring_tail(const wsd_ring *r);
int32_t wsd_ring_producer_pid(const wsd_ring *r);
int32_t wsd_ring_consumer_pid(const wsd_ring *r);
int wsd_ring_producer_closed(const wsd_ring *r);
int wsd_ring_consumer_closed(const wsd_ring *r);
/* Claim a role explicitly (normally done by the first operation):
 * role 1 = producer, 2 = consumer. */
int wsd_ring_claim(wsd_ring *r, int role);

/* Pointer forms for C users. */
static inline void *wsd_ring_reserve_ptr(wsd_ring *r, uint32_t n) {
    int64_t off = wsd_ring_reserve(r, n);
    return off < 0 ? NULL : (uint8_t *)r->hdr + off;
}
static inline const void *wsd_ring_off_ptr(const wsd_ring *r, uint64_t off) {
    return (const uint8_t *)r->hdr + off;
}

#endif
