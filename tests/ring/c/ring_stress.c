/*
 * Two-thread stress test of the C ring API (no GIL in the way): a producer
 * mixing reserve/commit, push, push_packed/push_iov, reserve_batch/commit_batch
 * and posted spans (post/commit_posted with shorter real lengths: FILL records),
 * a consumer mixing peek/release and pop_packed and sometimes sleeping on the
 * eventfd through arm_readable (a lost wake-up would hang until the 20 s poll
 * timeout and fail). Every message carries its sequence number and a payload
 * derived from it; the consumer checks each byte. Built by
 * tests/ring/test_ring_c.py plainly and with -fsanitize=thread /
 * -fsanitize=address,undefined.
 *
 * usage: ring_stress <messages> <capacity>
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static wsd_ring prod, cons;
static uint64_t total;
static int efd_r, efd_w;

static uint32_t size_of(uint64_t seq) {
    uint64_t x = seq * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    uint32_t s = (uint32_t)(x % 600u);
    if (seq % 97 == 0)
        s = (uint32_t)(x % 3000u); /* now and then a big one */
    return s < 8 ? 8 : s;
}

static void fill(uint8_t *p, uint64_t seq, uint32_t n) {
    memcpy(p, &seq, 8);
    for (uint32_t i = 8; i < n; i++)
        p[i] = (uint8_t)(seq * 131u + i);
}

static int check(const uint8_t *p, uint32_t n, uint64_t want) {
    uint64_t seq;
    if (n != size_of(want)) {
        fprintf(stderr, "message %llu: length %u, want %u\n", (unsigned long long)want, n,
                size_of(want));
        return -1;
    }
    memcpy(&seq, p, 8);
    if (seq != want) {
        fprintf(stderr, "got message %llu, want %llu\n", (unsigned long long)seq,
                (unsigned long long)want);
        return -1;
    }
    for (uint32_t i = 8; i < n; i++)
        if (p[i] != (uint8_t)(seq * 131u + i)) {
            fprintf(stderr, "message %llu: byte %u torn\n", (unsigned long long)seq, i);
            return -1;
        }
    return 0;
}

static void wait_room(uint32_t n) {
    while (!wsd_ring_spin_writable(&prod, n, 64)) {
        uint64_t junk;
        ssize_t rd = read(efd_w, &junk, 8);
        (void)rd;
        if (wsd_ring_arm_writable(&prod, n))
            return;
        struct pollfd pfd = {efd_w, POLLIN, 0};
        if (poll(&pfd, 1, 20000) == 0) {
            fprintf(stderr, "producer: lost wake-up (20 s without room)\n");
            exit(3);
        }
        wsd_ring_disarm_writable(&prod);
    }
}

static void *producer(void *arg) {
    (void)arg;
    uint8_t scratch[8 * 3000];
    uint32_t lens[8];
    uint64_t offs[8];
    uint64_t seq = 0;
    while (seq < total) {
        int mode = (int)((seq / 64) % 5);
        if (mode == 0) {
            uint32_t n = size_of(seq);
            uint8_t *p = wsd_ring_reserve_ptr(&prod, n + 100); /* commit less than reserved */
            if (!p) {
                wait_room(n + 100);
                continue;
            }
            fill(p, seq, n);
            if (wsd_ring_commit(&prod, n) != 0)
                exit(4);
            seq++;
        } else if (mode == 1) {
            uint32_t n = size_of(seq);
            fill(scratch, seq, n);
            int rc = wsd_ring_push(&prod, scratch, n);
            if (rc < 0)
                exit(5);
            if (rc == 0) {
                wait_room(n);
                continue;
            }
            seq++;
        } else if (mode == 2) {
            uint32_t k = 0, used = 0;
            while (k < 8 && seq + k < total) {
                lens[k] = size_of(seq + k);
                fill(scratch + used, seq + k, lens[k]);
                used += lens[k];
                k++;
            }
            const void *ptrs[8];
            for (uint32_t i = 0, o = 0; i < k; o += lens[i], i++)
                ptrs[i] = scratch + o;
            int got = (seq / 64) % 8 == 2 ? wsd_ring_push_packed(&prod, scratch, lens, k)
                                          : wsd_ring_push_iov(&prod, ptrs, lens, k);
            if (got < 0)
                exit(6);
            if (got == 0)
                wait_room(lens[0]);
            seq += (uint64_t)got;
        } else if (mode == 4) {
            /* Posted spans (a receive ring): post up to 8 spans bigger than the
             * messages, fill them, commit the real lengths in two steps. */
            uint32_t k = 0;
            while (k < 8 && seq + k < total) {
                uint32_t n = size_of(seq + k);
                int64_t off = wsd_ring_post(&prod, n + 8 * (uint32_t)(seq % 5) + 3);
                if (off == -EAGAIN)
                    break;
                if (off < 0)
                    exit(9);
                fill((uint8_t *)prod.hdr + off, seq + k, n);
                lens[k++] = n;
            }
            if (k == 0) {
                wait_room(size_of(seq) + 8 * (uint32_t)(seq % 5) + 3);
                continue;
            }
            uint32_t first = k > 1 ? k / 2 : k;
            if (wsd_ring_commit_posted(&prod, lens, first) != 0 ||
                wsd_ring_commit_posted(&prod, lens + first, k - first) != 0 || wsd_ring_posted(&prod) != 0)
                exit(10);
            seq += k;
        } else {
            uint32_t k = 0;
            while (k < 8 && seq + k < total) {
                lens[k] = size_of(seq + k);
                k++;
            }
            int got = wsd_ring_reserve_batch(&prod, lens, k, offs);
            if (got < 0)
                exit(7);
            if (got == 0) {
                wait_room(lens[0]);
                continue;
            }
            for (int i = 0; i < got; i++)
                fill((uint8_t *)prod.hdr + offs[i], seq + (uint64_t)i, lens[i]);
            uint32_t commit = (uint32_t)got > 1 && seq % 3 == 0 ? (uint32_t)got - 1 : (uint32_t)got;
            if (wsd_ring_commit_batch(&prod, commit) != 0)
                exit(8);
            seq += commit;
        }
    }
    wsd_ring_close(&prod);
    return NULL;
}

static void wait_data(void) {
    uint64_t junk;
    ssize_t rd = read(efd_r, &junk, 8);
    (void)rd;
    if (wsd_ring_arm_readable(&cons))
        return;
    struct pollfd pfd = {efd_r, POLLIN, 0};
    if (poll(&pfd, 1, 20000) == 0) {
        fprintf(stderr, "consumer: lost wake-up (20 s without data)\n");
        exit(9);
    }
    wsd_ring_disarm_readable(&cons);
}

int main(int argc, char **argv) {
    total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint64_t cap = argc > 2 ? strtoull(argv[2], NULL, 10) : 4096;
    uint64_t size = wsd_ring_map_size(cap);
    void *mem = aligned_alloc(4096, (size + 4095) & ~4095ull);
    if (!size || !mem || wsd_ring_format(mem, size, cap) != 0)
        return 2;
    if (wsd_ring_open(&prod, mem, size) || wsd_ring_open(&cons, mem, size))
        return 2;
    efd_r = eventfd(0, EFD_NONBLOCK);
    efd_w = eventfd(0, EFD_NONBLOCK);
    wsd_ring_set_fds(&prod, efd_r, efd_w);
    wsd_ring_set_fds(&cons, efd_r, efd_w);

    pthread_t th;
    pthread_create(&th, NULL, producer, NULL);

    uint64_t want = 0, sleeps = 0;
    uint64_t offs[16];
    uint32_t lens[16];
    static uint8_t out[16 * 3000];
    while (want < total) {
        if (want % 5 == 0) {
            int k = wsd_ring_pop_packed(&cons, out, sizeof out, lens, 16);
            if (k < 0) {
                fprintf(stderr, "pop_packed: %d\n", k);
                return 10;
            }
            uint64_t o = 0;
            for (int i = 0; i < k; i++) {
                if (check(out + o, lens[i], want++))
                    return 11;
                o += lens[i];
            }
            if (k == 0) {
                sleeps++;
                if (sleeps % 4 == 0)
                    wait_data();
                else
                    wsd_ring_spin_readable(&cons, 256);
            }
            continue;
        }
        const void *ptrs[16];
        int use_ptrs = want % 3 == 0;
        int k = use_ptrs ? wsd_ring_peek_ptrs(&cons, 1 + (uint32_t)(want % 16), ptrs, lens)
                         : wsd_ring_peek(&cons, 1 + (uint32_t)(want % 16), offs, lens);
        if (k < 0) {
            fprintf(stderr, "peek: %d\n", k);
            return 12;
        }
        if (k == 0) {
            sleeps++;
            if (sleeps % 4 == 0)
                wait_data();
            else
                wsd_ring_spin_readable(&cons, 256);
            continue;
        }
        for (int i = 0; i < k; i++)
            if (check(use_ptrs ? ptrs[i] : wsd_ring_off_ptr(&cons, offs[i]), lens[i], want++))
                return 13;
        if (wsd_ring_release(&cons, (uint32_t)k) != 0)
            return 14;
    }
    /* Then EOF: the producer closed, nothing more. */
    pthread_join(th, NULL);
    if (!wsd_ring_readable(&cons) || wsd_ring_peek(&cons, 16, offs, lens) != 0 ||
        !wsd_ring_producer_closed(&cons))
        return 15;
    if (wsd_ring_head(&cons) != wsd_ring_tail(&cons))
        return 16;
    printf("ok %llu messages, %llu empty polls\n", (unsigned long long)want,
           (unsigned long long)sleeps);
    close(efd_r);
    close(efd_w);
    free(mem);
    return 0;
}
