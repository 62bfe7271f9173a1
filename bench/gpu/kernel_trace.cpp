// Kernel timeline of any CUDA program, CUDA graphs included, without Nsight Systems (not on the GPU machine):
// a CUDA injection library that records CUPTI's concurrent-kernel activity (start, end, stream, graph node, grid,
// name of every kernel; tracing this kind does not serialise kernels) and writes it at exit as tab-separated lines
// to $DS_KERNEL_TRACE. bench/gpu/trace_decode.sh builds and uses it; trace_step.py reads the file.
//
//   g++ -O2 -shared -fPIC bench/gpu/kernel_trace.cpp -I$CUDA/include -L$CUDA/lib -lcupti -o kernel_trace.so
//   CUDA_INJECTION64_PATH=$PWD/kernel_trace.so DS_KERNEL_TRACE=trace.tsv PROGRAM ...
//
// Columns: start_ns end_ns stream_id graph_id graph_node_id grid_x grid_y grid_z block_x name (mangled)
// correlation_id. With DS_TRACE_MEMOPS set, memsets and copies are rows too, named memset:BYTES and
// memcpy:KIND:BYTES. With DS_TRACE_API set, the host's CUDA runtime and driver calls go to $DS_KERNEL_TRACE.api
// (start_ns end_ns correlation_id name, on CUPTI's clock as the GPU rows): a kernel's launch call is the row with
// its correlation id, so trace_train.py can tell where the GPU waited for the host to launch.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t kBufferBytes = 8 << 20;

struct Row {
  uint64_t start, end, node;
  uint32_t stream, graph;
  int32_t gx, gy, gz, bx;
  std::string name;
  uint32_t corr;
};
struct ApiRow {
  uint64_t start, end;
  uint32_t corr;
  const char* name;  // CUPTI's, static
};

std::mutex g_mu;
std::vector<Row>* g_rows = nullptr;  // leaked on purpose: written from CUPTI's thread until exit
std::vector<ApiRow>* g_api = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME || rec->kind == CUPTI_ACTIVITY_KIND_DRIVER) {
      const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
      const char* name = nullptr;
      cuptiGetCallbackName(rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME ? CUPTI_CB_DOMAIN_RUNTIME_API
                                                                    : CUPTI_CB_DOMAIN_DRIVER_API,
                           a->cbid, &name);
      g_api->push_back(ApiRow{a->start, a->end, a->correlationId, name ? name : "?"});
      continue;
    }
    if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {  // as rows named "memset:BYTES" (grid fields 0)
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
      g_rows->push_back(Row{m->start, m->end, m->graphNodeId, m->streamId, m->graphId, 0, 0, 0, 0,
                            "memset:" + std::to_string(m->bytes), m->correlationId});
      continue;
    }
    if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {  // "memcpy:KIND:BYTES" (KIND: CUpti_ActivityMemcpyKind)
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
      g_rows->push_back(Row{m->start, m->end, m->graphNodeId, m->streamId, m->graphId, 0, 0, 0, 0,
                            "memcpy:" + std::to_string(int(m->copyKind)) + ":" + std::to_string(m->bytes),
                            m->correlationId});
      continue;
    }
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    g_rows->push_back(Row{k->start, k->end, k->graphNodeId, k->streamId, k->graphId, k->gridX, k->gridY, k->gridZ,
                          k->blockX, k->name ? k->name : "?", k->correlationId});
  }
  std::free(buffer);
}

void write_trace() {
  cuptiActivityFlushAll(1);
  const char* path = std::getenv("DS_KERNEL_TRACE");
  FILE* f = std::fopen(path ? path : "kernel_trace.tsv", "w");
  if (!f) return;
  std::lock_guard<std::mutex> lock(g_mu);
  for (const Row& r : *g_rows)
    std::fprintf(f, "%llu\t%llu\t%u\t%u\t%llu\t%d\t%d\t%d\t%d\t%s\t%u\n", (unsigned long long)r.start,
                 (unsigned long long)r.end, r.stream, r.graph, (unsigned long long)r.node, r.gx, r.gy, r.gz, r.bx,
                 r.name.c_str(), r.corr);
  std::fclose(f);
  if (g_api->empty()) return;
  FILE* a = std::fopen((std::string(path ? path : "kernel_trace.tsv") + ".api").c_str(), "w");
  if (!a) return;
  for (const ApiRow& r : *g_api)
    std::fprintf(a, "%llu\t%llu\t%u\t%s\n", (unsigned long long)r.start, (unsigned long long)r.end, r.corr, r.name);
  std::fclose(a);
}

}  // namespace

// Called by the CUDA driver when CUDA_INJECTION64_PATH names this library.
extern "C" int InitializeInjection() {
  g_rows = new std::vector<Row>();
  g_rows->reserve(1 << 20);
  g_api = new std::vector<ApiRow>();
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
      (std::getenv("DS_TRACE_MEMOPS") &&  // memsets and copies too (trace_train.sh sets it)
       (cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS))) {
    std::fprintf(stderr, "kernel_trace: CUPTI activity tracing could not be enabled\n");
    return 0;
  }
  if (std::getenv("DS_TRACE_API") && (cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME) != CUPTI_SUCCESS ||
                                      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER) != CUPTI_SUCCESS))
    std::fprintf(stderr, "kernel_trace: CUPTI API tracing could not be enabled\n");
  std::atexit(write_trace);
  return 1;
}
