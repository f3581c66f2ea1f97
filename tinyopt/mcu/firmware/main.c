/* Measurement firmware: streams the inputs from a host file (semihosting), runs the generated model on each,
 * writes the raw outputs back, and counts SysTick ticks around every invoke and between ops. Under QEMU with
 * -icount, SysTick advances with executed instructions (QEMU has no cycle model). */
#include <stdint.h>

extern const unsigned tinyopt_input_bytes, tinyopt_output_bytes, tinyopt_op_count;
void *tinyopt_input(void);
int tinyopt_invoke(const void *in, void *out);
unsigned fw_stack_used(void);

/* The model's output bytes and op count, passed by the build (tinyopt.mcu.firmware.build_firmware): the
 * harness's buffers are sized for the model it measures, so its RAM figure counts exactly what it needs. */
#if !defined(TINYOPT_OUTPUT_BYTES) || !defined(TINYOPT_OP_COUNT)
#error "build with -DTINYOPT_OUTPUT_BYTES=<the model's output bytes> -DTINYOPT_OP_COUNT=<its op count>"
#endif
#define OP_SLOTS (TINYOPT_OP_COUNT > 0 ? TINYOPT_OP_COUNT : 1)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

static uint64_t op_ticks[OP_SLOTS];
static uint32_t last_tick;
static uint8_t output[TINYOPT_OUTPUT_BYTES];
#ifdef TINYOPT_INPUT_BYTES /* an autoencoder: its reconstruction error is computed here, outside the ticks */
float tinyopt_reconstruction_error(const void *in, const void *out);
static uint8_t kept_input[TINYOPT_INPUT_BYTES];
#endif

void SysTick_Handler(void) {}

/* SysTick counts down and wraps every 2^24 ticks; every interval measured here is far shorter, so the
 * difference of two readings modulo 2^24 is exact without counting wraps. */
static uint32_t now(void) { return SYST_CVR; }
static uint32_t ticks_since(uint32_t then) { return (then - SYST_CVR) & 0xFFFFFFu; }

void tinyopt_op_hook(int op) {
  uint32_t t = now();
  if (op > 0 && op <= TINYOPT_OP_COUNT) op_ticks[op - 1] += (last_tick - t) & 0xFFFFFFu;
  last_tick = t;
}

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

static int open_file(const char *name, int mode) {
  uint32_t len = 0;
  while (name[len]) len++;
  uint32_t block[3] = {(uint32_t)name, (uint32_t)mode, len};
  return semihost(0x01, block);
}

int main(void) {
  int in = open_file("inputs.bin", 1), out = open_file("outputs.bin", 5);
  if (in < 0 || out < 0) return 2;
#ifdef TINYOPT_INPUT_BYTES
  int errors = open_file("errors.bin", 5);
  if (errors < 0) return 2;
#endif
  uint32_t flen[1] = {(uint32_t)in};
  int count = semihost(0x0C, flen) / (int)tinyopt_input_bytes;
  /* Exit codes (tinyopt.mcu.firmware.EXIT_REASONS says each in words): 2 a file would not open, 3 the harness
   * was built for another model, 4 an input could not be read, 5 an output could not be written. */
  if (tinyopt_output_bytes != sizeof output || tinyopt_op_count != TINYOPT_OP_COUNT) return 3;
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5; /* processor clock, no interrupt, enabled */
  uint64_t total = 0;
  for (int i = 0; i < count; i++) {
    uint32_t rd[3] = {(uint32_t)in, (uint32_t)tinyopt_input(), tinyopt_input_bytes};
    if (semihost(0x06, rd) != 0) return 4;
#ifdef TINYOPT_INPUT_BYTES
    for (unsigned b = 0; b < TINYOPT_INPUT_BYTES; b++) kept_input[b] = ((const uint8_t *)tinyopt_input())[b];
#endif
    uint32_t t0 = now();
    last_tick = t0;
    tinyopt_invoke(tinyopt_input(), output);
    total += ticks_since(t0);
    uint32_t wr[3] = {(uint32_t)out, (uint32_t)output, tinyopt_output_bytes};
    if (semihost(0x05, wr) != 0) return 5;
#ifdef TINYOPT_INPUT_BYTES
    float error = tinyopt_reconstruction_error(kept_input, output);
    uint32_t we[3] = {(uint32_t)errors, (uint32_t)&error, sizeof error};
    if (semihost(0x05, we) != 0) return 5;
#endif
  }
  put("TINYOPT count=");
  put_u64((uint64_t)count);
  put(" ticks=");
  put_u64(total);
  put(" stack=");
  put_u64(fw_stack_used());
  put(" ops=");
  for (unsigned k = 0; k < tinyopt_op_count; k++) {
    put_u64(op_ticks[k]);
    put(k + 1 < tinyopt_op_count ? "," : "\n");
  }
  uint32_t cl[1] = {(uint32_t)out};
  semihost(0x02, cl);
#ifdef TINYOPT_INPUT_BYTES
  cl[0] = (uint32_t)errors;
  semihost(0x02, cl);
#endif
  return 0;
}
