// Raw bytes on a daemon's port: cpp-httplib's request parsing (request line, headers,
// chunked and multipart bodies, query strings) configured exactly as HttpServer configures
// it, then our request conversion, admission before the body (routes, signatures, bearer
// token, body caps), routing and handlers: the trainer's routes, and for /classify every
// uploaded part through decode_image. No socket: the bytes
// come from a Stream over the input.

#include <cstdint>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "http_server_setup.h"
#include "image_decode.h"
#include "job_runner.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/routes.h"
#include "status_board.h"
#include "trainer_api.h"

namespace {

using namespace mlswarm;

class BytesStream final : public httplib::Stream {
 public:
  BytesStream(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, std::size_t size) override {
    const std::size_t n = std::min(size, size_ - offset_);
    std::memcpy(ptr, data_ + offset_, n);
    offset_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    if (written.size() < 4096) written.append(ptr, std::min<std::size_t>(size, 4096));
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "10.42.0.9";
    port = 40000;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "10.42.0.2";
    port = 48516;
  }
  socket_t socket() const override { return INVALID_SOCKET; }

  std::string written;  ///< the start of the reply

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
};

class FuzzServer final : public httplib::Server {
 public:
  void feed(httplib::Stream& stream) {
    bool closed = false;
    process_request(stream, true, closed, nullptr);
  }
};

struct Daemon {
  Daemon() {
    spdlog::set_level(spdlog::level::off);
    HttpServerOptions options;
    options.max_body_bytes = 1u << 20;
    HttpService service = api.service();
    service.admit = [this](const HttpRequest& head) -> std::optional<HttpReply> {
      if (head.path != "/classify") return api.admit(head);
      return guarded_admit(head, [&]() -> std::optional<HttpReply> {
        require_token(head, "fuzz-token", "API token");
        return std::nullopt;
      });
    };
    service.handle = [this](const HttpRequest& request) -> HttpReply {
      if (request.path == "/classify") {
        for (const auto& part : request.files) {
          try {
            (void)decode_image(part.content, 1, 28, 28);
          } catch (const Error&) {
          }
        }
        return HttpReply::json(200, {{"parts", request.files.size()}});
      }
      return api.serve(request);
    };
    configure_http_server(server, std::move(service), options);
  }
  // Few finished jobs kept: /status serialises them all, and the fuzzer makes thousands.
  StatusBoard board{16};
  // Jobs end at once: the fuzzer exercises admission, not training. Queue bounded at 8.
  JobRunner runner{board, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                   JobRunnerOptions{1, 8, "10.42.0.2:48516"}};
  TrainerApi api{runner, board, "10.42.0.2:48516", "fuzz-token"};
  FuzzServer server;
};

}  // namespace

Daemon& daemon_instance() {
  static Daemon* daemon = new Daemon();  // lives for the process: its threads outlast inputs
  return *daemon;
}

// The harness checks itself: a plain request must reach the trainer's routes and come back.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string request = "GET /type HTTP/1.1\r\nHost: x\r\n\r\n";
  BytesStream stream(reinterpret_cast<const std::uint8_t*>(request.data()), request.size());
  daemon_instance().server.feed(stream);
  if (stream.written.find("{\"type\":\"train\"}") == std::string::npos) __builtin_trap();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Daemon* daemon = &daemon_instance();
  BytesStream stream(data, size);
  daemon->server.feed(stream);
  return 0;
}
