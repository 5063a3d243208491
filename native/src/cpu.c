/* cpu.c: runtime detection of the CPU features the fast cell codec needs.
 *
 * It asks cpuid for AES-NI, SHA-NI, SSSE3 and SSE4.1 and checks that the operating system saves
 * the XMM registers. It decides nothing about which codec runs; cell_batch.c does that.
 */
#include <stdatomic.h>

#include "cell_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* XCR0 bit 1 says the OS saves SSE state across context switches. Reading it needs XGETBV, which
 * is only legal when cpuid reports OSXSAVE; without OSXSAVE a 64-bit OS still saves XMM state
 * through FXSAVE, so the SSE registers are usable either way. */
static int os_saves_xmm(unsigned int ecx1) {
    if (!(ecx1 & (1u << 27))) {
        return 1;
    }
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    (void)edx;
    return (eax & 2u) != 0;
}

static uint32_t detect(void) {
    unsigned int eax, ebx, ecx, edx;
    uint32_t flags = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        return 0;
    }
    if (ecx & (1u << 25)) flags |= EE_CPU_AES;
    if (ecx & (1u << 19)) flags |= EE_CPU_SSE41;
    if (ecx & (1u << 9)) flags |= EE_CPU_SSSE3;
    if (os_saves_xmm(ecx)) flags |= EE_CPU_OS_XMM;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        if (ebx & (1u << 29)) flags |= EE_CPU_SHA;
    }
    return flags;
}
#else
static uint32_t detect(void) { return 0; }
#endif

/* Bit 31 marks "detected": cpuid answers never change while the process runs, so two threads
 * that race on the first call store the same value and either store is correct. */
#define DETECTED (1u << 31)

uint32_t ee_cpu_flags(void) {
    static _Atomic uint32_t cached = 0;
    uint32_t value = atomic_load(&cached);
    if (!(value & DETECTED)) {
        value = detect() | DETECTED;
        atomic_store(&cached, value);
    }
    return value & ~DETECTED;
}

int ee_cpu_fast_supported(void) {
    const uint32_t need = EE_CPU_AES | EE_CPU_SHA | EE_CPU_SSE41 | EE_CPU_SSSE3 | EE_CPU_OS_XMM;
    return (ee_cpu_flags() & need) == need;
}

ee_status ee_cpu_features(uint32_t *out_flags) {
    if (out_flags == NULL) {
        return EE_ERR_ARGUMENT;
    }
    *out_flags = ee_cpu_flags();
    return EE_OK;
}
