// Raw bytes on a daemon's port, as one connection's input: the server's request framer on
// Boost.Beast's parser (request line, headers, strict framing, chunked bodies, query strings)
// configured as HttpServer configures it, then the steps a session takes with each request:
// admission before the body (routes, signatures, bearer token, body caps), multipart parts,
// routing and handlers (the trainer's routes; for /classify every uploaded part through
// decode_image), and the reply's head. No socket: the bytes come in pieces of the input's
// own choosing, as reads would.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "http_edge.h"
#include "request_framer.h"
#include "mlswarm/image_decode.h"
#include "job_runner.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/routes.h"
#include "status_board.h"
#include "trainer_api.h"

namespace {

using namespace mlswarm;

struct Daemon {
  Daemon() {
    spdlog::set_level(spdlog::level::off);
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
    edge = std::make_unique<HttpEdge>(std::move(service));
  }

  /// One connection's input: requests answered in order until an error or a refusal that
  /// closes, as a session does. Returns the replies' heads and bodies (the first 4 KiB).
  /// `piece`: the bytes of each read.
  std::string serve(const std::uint8_t* data, std::size_t size, std::size_t piece) {
    RequestFramer framer(16u << 10);
    std::string written;
    std::size_t at = 0;
    const auto now = std::chrono::steady_clock::now();
    while (true) {
      const RequestFramer::Event event = framer.parse();
      if (event == RequestFramer::Event::kNeedMore) {
        if (at >= size) {
          framer.end_of_input();
          if (framer.parse() == RequestFramer::Event::kNeedMore) __builtin_trap();  // must end
          return written;
        }
        const std::size_t n = std::min(piece, size - at);
        framer.feed(std::string_view(reinterpret_cast<const char*>(data) + at, n));
        at += n;
        continue;
      }
      if (event == RequestFramer::Event::kClosed) return written;
      if (event == RequestFramer::Event::kError) {
        return written + render_reply_head(HttpReply::error(framer.error()), "fuzz", false);
      }
      if (event == RequestFramer::Event::kHead) {
        if (auto refused = edge->admit(framer.head())) {
          written += render_reply_head(*refused, "fuzz", false);
          if (!framer.skip_bodyless()) return written;
          continue;
        }
        framer.admit_body(edge->body_cap(framer.head(), 1u << 20));
        continue;
      }
      HttpReply reply = edge->answer(framer.take(), now);
      if (written.size() < 4096) written += render_reply_head(reply, "fuzz", true) + reply.body.substr(0, 4096);
    }
  }
  // Few finished jobs kept: /status serialises them all, and the fuzzer makes thousands.
  StatusBoard board{16};
  // Jobs end at once: the fuzzer exercises admission, not training. Queue bounded at 8.
  JobRunner runner{board, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                   JobRunnerOptions{1, 8, "10.42.0.2:48516"}};
  TrainerApi api{runner, board, "10.42.0.2:48516", "fuzz-token"};
  std::unique_ptr<HttpEdge> edge;
};

}  // namespace

Daemon& daemon_instance() {
  static Daemon* daemon = new Daemon();  // lives for the process: its threads outlast inputs
  return *daemon;
}

// The harness checks itself: a plain request must reach the trainer's routes and come back.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string request = "GET /type HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string written =
      daemon_instance().serve(reinterpret_cast<const std::uint8_t*>(request.data()), request.size(), 7);
  if (written.find("{\"type\":\"train\"}") == std::string::npos) __builtin_trap();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // All at once, and in reads of 1 to 61 bytes (the size chooses), as a trickling client sends.
  (void)daemon_instance().serve(data, size, std::max<std::size_t>(size, 1));
  (void)daemon_instance().serve(data, size, 1 + size % 61);
  return 0;
}
