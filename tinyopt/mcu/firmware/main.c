/* Measurement firmware: streams the inputs from a host file (semihosting), runs the generated model on each,
 * writes the raw outputs back, and counts SysTick ticks around every invoke and between ops. Under QEMU with
 * -icount, SysTick advances with executed instructions (QEMU has no cycle model). */
#include "semihost.h"

extern const unsigned tinyopt_input_bytes, tinyopt_output_bytes, tinyopt_op_count;
void *tinyopt_input(void);
int tinyopt_invoke(const void *in, void *out);

/* The model's output bytes and op count, passed by the build (tinyopt.mcu.firmware.build_firmware): the
 * harness's buffers are sized for the model it measures, so its RAM figure counts exactly what it needs. */
#if !defined(TINYOPT_OUTPUT_BYTES) || !defined(TINYOPT_OP_COUNT)
#error "build with -DTINYOPT_OUTPUT_BYTES=<the model's output bytes> -DTINYOPT_OP_COUNT=<its op count>"
#endif
#define OP_SLOTS (TINYOPT_OP_COUNT > 0 ? TINYOPT_OP_COUNT : 1)

static uint64_t op_ticks[OP_SLOTS];
static uint32_t last_tick;
static uint8_t output[TINYOPT_OUTPUT_BYTES];
#ifdef TINYOPT_INPUT_BYTES /* an autoencoder: its reconstruction error is computed here, outside the ticks */
float tinyopt_reconstruction_error(const void *in, const void *out);
static uint8_t kept_input[TINYOPT_INPUT_BYTES];
#endif

void SysTick_Handler(void) {}

void tinyopt_op_hook(int op) {
  uint32_t t = now();
  if (op > 0 && op <= TINYOPT_OP_COUNT) op_ticks[op - 1] += (last_tick - t) & 0xFFFFFFu;
  last_tick = t;
}

int main(void) {
  int in = open_file("inputs.bin", 1), out = open_file("outputs.bin", 5);
  if (in < 0 || out < 0) return 2;
#ifdef TINYOPT_INPUT_BYTES
  int errors = open_file("errors.bin", 5);
  if (errors < 0) return 2;
#endif
  int count = file_length(in) / (int)tinyopt_input_bytes;
  /* Exit codes (tinyopt.mcu.firmware.EXIT_REASONS says each in words): 2 a file would not open, 3 the harness
   * was built for another model, 4 an input could not be read, 5 an output could not be written. */
  if (tinyopt_output_bytes != sizeof output || tinyopt_op_count != TINYOPT_OP_COUNT) return 3;
  start_ticks();
  uint64_t total = 0;
  for (int i = 0; i < count; i++) {
    if (read_file(in, tinyopt_input(), tinyopt_input_bytes) != 0) return 4;
#ifdef TINYOPT_INPUT_BYTES
    for (unsigned b = 0; b < TINYOPT_INPUT_BYTES; b++) kept_input[b] = ((const uint8_t *)tinyopt_input())[b];
#endif
    fw_window_open();
    uint32_t t0 = now();
    last_tick = t0;
    tinyopt_invoke(tinyopt_input(), output);
    total += ticks_since(t0);
    fw_window_close();
    if (write_file(out, output, tinyopt_output_bytes) != 0) return 5;
#ifdef TINYOPT_INPUT_BYTES
    float error = tinyopt_reconstruction_error(kept_input, output);
    if (write_file(errors, &error, sizeof error) != 0) return 5;
#endif
  }
  report((uint64_t)count, total, op_ticks, tinyopt_op_count);
  close_file(out);
#ifdef TINYOPT_INPUT_BYTES
  close_file(errors);
#endif
  return 0;
}
