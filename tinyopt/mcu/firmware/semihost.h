/* Semihosting for the measurement firmwares (main.c; the TFLM anchor's harness in benchmarks/tflm_anchor):
 * console, host files, exit status, and the report line tinyopt.mcu.firmware.run_firmware parses. Included by
 * exactly one source of a firmware: it defines fw_exit, which startup.c calls. */
#ifndef TINYOPT_SEMIHOST_H
#define TINYOPT_SEMIHOST_H
#include <stdint.h>

unsigned fw_stack_used(void); /* startup.c: the painted stack's high-water mark */

static int semihost(int op, void *arg) {
  register int r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void fw_exit(int code) {
  uint32_t block[2] = {0x20026, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
  semihost(0x20, block);
  for (;;) {
  }
}

static void put(const char *s) { semihost(0x04, (void *)s); }

static void put_u64(uint64_t v) {
  char buf[24];
  int i = 23;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(buf + i);
}

/* mode 1: read binary, 5: write binary. A negative handle when the file would not open. */
static int open_file(const char *name, int mode) {
  uint32_t len = 0;
  while (name[len]) len++;
  uint32_t block[3] = {(uint32_t)name, (uint32_t)mode, len};
  return semihost(0x01, block);
}

static int file_length(int handle) {
  uint32_t block[1] = {(uint32_t)handle};
  return semihost(0x0C, block);
}

/* 0 when all `bytes` were read or written. */
static int read_file(int handle, void *to, uint32_t bytes) {
  uint32_t block[3] = {(uint32_t)handle, (uint32_t)to, bytes};
  return semihost(0x06, block);
}

static int write_file(int handle, const void *from, uint32_t bytes) {
  uint32_t block[3] = {(uint32_t)handle, (uint32_t)from, bytes};
  return semihost(0x05, block);
}

static void close_file(int handle) {
  uint32_t block[1] = {(uint32_t)handle};
  semihost(0x02, block);
}

/* SysTick, clocked by the core: under QEMU with -icount it advances with executed instructions. It counts down
 * and wraps every 2^24 ticks; every interval measured is far shorter, so the difference of two readings modulo
 * 2^24 is exact without counting wraps. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

static void start_ticks(void) {
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5; /* processor clock, no interrupt, enabled */
}
static uint32_t now(void) { return SYST_CVR; }
static uint32_t ticks_since(uint32_t then) { return (then - SYST_CVR) & 0xFFFFFFu; }

/* Empty calls around each counted invoke, outside the ticks: benchmarks/cycles' QEMU plugin counts the
 * instruction mix between them. The asm keeps GCC from dropping calls to a function without effects. */
__attribute__((noinline)) void fw_window_open(void) { __asm volatile(""); }
__attribute__((noinline)) void fw_window_close(void) { __asm volatile(""); }

/* The line run_firmware parses: inferences, their ticks, the stack's high-water mark, ticks per op. */
static void report(uint64_t count, uint64_t ticks, const uint64_t *op_ticks, unsigned ops) {
  put("TINYOPT count=");
  put_u64(count);
  put(" ticks=");
  put_u64(ticks);
  put(" stack=");
  put_u64(fw_stack_used());
  put(" ops=");
  for (unsigned k = 0; k < ops; k++) {
    put_u64(op_ticks[k]);
    if (k + 1 < ops) put(",");
  }
  put("\n");
}
#endif
