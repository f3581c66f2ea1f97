/* Bare-metal start for Cortex-M under QEMU: vector table, .data/.bss set-up, FPU on, stack painting.
 * Compiled without vectorization: on Cortex-M55, GCC would otherwise use MVE before it is enabled. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);
void fw_exit(int code);
void SysTick_Handler(void);

#define STACK_PAINT 0xA5A5A5A5u

static void hard_fault(void) { fw_exit(70); }

__attribute__((noreturn)) void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
  __asm volatile("dsb\n isb");
#endif
  for (uint32_t *s = &_sidata, *d = &_sdata; d < &_edata;) *d++ = *s++;
  for (uint32_t *d = &_sbss; d < &_ebss;) *d++ = 0;
  /* Paint the stack below the current frame, so that the high-water mark can be read after the run. */
  uint32_t *sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t *p = &_sstack; p < sp - 16;) *p++ = STACK_PAINT;
  fw_exit(main());
  for (;;) {
  }
}

unsigned fw_stack_used(void) {
  uint32_t *p = &_sstack;
  while (p < &_estack && *p == STACK_PAINT) p++;
  return (unsigned)((uint8_t *)&_estack - (uint8_t *)p);
}

__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, Reset_Handler, hard_fault, hard_fault, hard_fault, hard_fault, hard_fault,
    0, 0, 0, 0, hard_fault, hard_fault, 0, hard_fault, SysTick_Handler,
};
