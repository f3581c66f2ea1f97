/* TFLM + CMSIS-NN measurement firmware, the anchor of benchmarks/mlperf_tiny.py. It shares tinyopt's
 * semihosting, input and output files, SysTick counting and report line (tinyopt/mcu/firmware/semihost.h) and
 * counts the same span: one MicroInterpreter::Invoke per input. The arena is the linker's .arena section,
 * sized per link (the benchmark bisects the smallest that allocates and invokes). Exit codes beyond main.c's:
 * 6 the arena is too small, 7 Invoke failed, 71 a pure virtual call. */
#include <new>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

extern "C" {
#include "semihost.h"
extern const unsigned char g_model[];
extern uint8_t _sarena[], _earena[];
typedef void (*init_fn)(void);
extern init_fn __init_array_start[], __init_array_end[];
void SysTick_Handler(void) {}
// The C++ runtime a bare-metal link asks for: no heap, no exceptions, static destructors never run.
void __cxa_pure_virtual() { fw_exit(71); }
int __cxa_atexit(void (*)(void *), void *, void *) { return 0; }
void *__dso_handle = nullptr;
}
void operator delete(void *) noexcept {}
void operator delete(void *, unsigned int) noexcept {}

// The int8 registrations: with OPTIMIZED_KERNEL_DIR=cmsis_nn these are CMSIS-NN's kernels.
using Resolver = tflite::MicroMutableOpResolver<11>;
alignas(Resolver) static uint8_t resolver_memory[sizeof(Resolver)];
alignas(tflite::MicroInterpreter) static uint8_t interpreter_memory[sizeof(tflite::MicroInterpreter)];

int main(void) {
  for (init_fn *f = __init_array_start; f < __init_array_end; f++) (*f)();
  Resolver *ops = new (resolver_memory) Resolver();
  ops->AddConv2D(tflite::Register_CONV_2D_INT8());
  ops->AddDepthwiseConv2D(tflite::Register_DEPTHWISE_CONV_2D_INT8());
  ops->AddFullyConnected(tflite::Register_FULLY_CONNECTED_INT8());
  ops->AddAveragePool2D(tflite::Register_AVERAGE_POOL_2D_INT8());
  ops->AddMaxPool2D(tflite::Register_MAX_POOL_2D_INT8());
  ops->AddAdd(tflite::Register_ADD_INT8());
  ops->AddSoftmax(tflite::Register_SOFTMAX_INT8());
  ops->AddReshape();
  ops->AddMean();
  ops->AddQuantize();  // the paper's int8 models with float input and output
  ops->AddDequantize();
  auto *interpreter = new (interpreter_memory)
      tflite::MicroInterpreter(tflite::GetModel(g_model), *ops, _sarena, (size_t)(_earena - _sarena));
  if (interpreter->AllocateTensors() != kTfLiteOk) return 6;
  put("TFLM arena_used=");
  put_u64(interpreter->arena_used_bytes());
  put("\n");
  TfLiteTensor *input = interpreter->input(0), *output = interpreter->output(0);
  int in = open_file("inputs.bin", 1), out = open_file("outputs.bin", 5);
  if (in < 0 || out < 0) return 2;
  int count = file_length(in) / (int)input->bytes;
  start_ticks();
  uint64_t total = 0;
  for (int i = 0; i < count; i++) {
    if (read_file(in, input->data.raw, input->bytes) != 0) return 4;
    fw_window_open();
    uint32_t t0 = now();
    if (interpreter->Invoke() != kTfLiteOk) return 7;
    total += ticks_since(t0);
    fw_window_close();
    if (write_file(out, output->data.raw, output->bytes) != 0) return 5;
  }
  report((uint64_t)count, total, nullptr, 0);
  close_file(out);
  return 0;
}
