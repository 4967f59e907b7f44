#include "mlswarm/http_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>  // Boost 1.74 Asio uses std::exchange without including it

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "connection_table.h"
#include "http_edge.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"
#include "request_framer.h"

namespace mlswarm {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

std::string request_id_for(const std::string& client_value) {
  bool sane = !client_value.empty() && client_value.size() <= 64;
  for (unsigned char c : client_value) {
    sane = sane && (std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-');
  }
  if (sane) return client_value;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

namespace {

/// Complete requests waiting for a worker: a bounded queue and `threads` threads that take from
/// it. Thread-safe. stop() joins the threads; tasks still queued are dropped (their connections
/// are being closed). A worker that lingers on its connection for the next request sleeps in
/// poll() on the connection and on wake_fd(), which is readable while a request waits with no
/// worker idle (or the pool stops): the lingering worker then gives its connection back and
/// takes the request. (Before, it woke every millisecond to look: on 2 busy cores those wake-ups
/// cost 5% of the requests/s.)
class WorkerPool {
 public:
  WorkerPool(int threads, std::size_t max_queued)
      : max_queued_(std::max<std::size_t>(1, max_queued)), wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    stop();
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// False when max_queued tasks already wait, or the pool stopped.
  bool submit(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || queue_.size() >= max_queued_) return false;
      queue_.push_back(std::move(task));
      if (idle_ == 0) signal();  // every worker busy or lingering: the lingering ones give way
    }
    ready_.notify_one();
    return true;
  }

  /// Requests waiting for a worker now.
  std::size_t waiting() {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  /// Readable while a request waits with no worker idle, or once the pool stops (-1 when no
  /// eventfd could be made: lingering workers then look every millisecond).
  int wake_fd() const { return wake_fd_; }

  /// Wakes the lingering workers (the server is closing).
  void wake_lingering() {
    std::lock_guard lock(mutex_);
    signal();
  }

  void stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      dropped.swap(queue_);
      signal();
    }
    ready_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void signal() {  // under mutex_
    if (signalled_ || wake_fd_ < 0) return;
    const std::uint64_t one = 1;
    signalled_ = ::write(wake_fd_, &one, sizeof one) == static_cast<ssize_t>(sizeof one);
  }
  void unsignal() {  // under mutex_
    if (!signalled_ || stopping_) return;
    std::uint64_t count = 0;
    signalled_ = ::read(wake_fd_, &count, sizeof count) != static_cast<ssize_t>(sizeof count);
  }

  void work() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        ++idle_;
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        --idle_;
        if (stopping_) return;
        task = std::move(queue_.front());
        queue_.pop_front();
        if (queue_.empty()) unsignal();
      }
      task();
    }
  }

  const std::size_t max_queued_;
  const int wake_fd_;
  std::mutex mutex_;  ///< guards queue_, idle_, signalled_ and stopping_
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  int idle_ = 0;            ///< workers waiting for a task
  bool signalled_ = false;  ///< wake_fd_ is readable
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// RLIMIT_NOFILE's soft limit, raised to the hard limit first (as most servers do at start).
std::size_t raise_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : static_cast<std::size_t>(limit.rlim_cur);
}

}  // namespace

HttpLimits settle_http_limits(const HttpServerOptions& options, std::size_t file_limit) {
  HttpLimits limits;
  limits.file_limit = file_limit;
  limits.fd_reserve = options.fd_reserve > 0 ? options.fd_reserve : std::clamp<std::size_t>(file_limit / 4, 64, 1024);
  limits.fd_reserve = std::min(limits.fd_reserve, file_limit - std::min<std::size_t>(file_limit, 8));
  const std::size_t by_files = file_limit - limits.fd_reserve;
  limits.max_connections =
      std::max<std::size_t>(1, options.max_connections > 0 ? std::min(options.max_connections, by_files) : by_files);
  limits.max_connections_per_address = options.max_connections_per_address > 0
                                           ? std::min(options.max_connections_per_address, limits.max_connections)
                                           : std::max<std::size_t>(1, limits.max_connections / 2);
  return limits;
}

/// Every connection of the server, plain or TLS, as the server sees it from elsewhere.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  /// Closes the connection, from any thread (on its own strand); with `unless_answering`, not
  /// while a worker handles its request or its reply goes out (a shutdown lets those finish; a
  /// connection still sending its head or body is closed, so a stalled client holds nothing).
  virtual void close_soon(const char* reason, bool unless_answering) = 0;
};

struct HttpServer::Impl {
  Impl(HttpService s, HttpServerOptions o) : edge(std::move(s)), options(std::move(o)) {}

  // Declared in the order they must outlive each other: sessions (held by the io_context's
  // handlers and the workers' tasks) use everything above `workers`.
  HttpEdge edge;
  const HttpServerOptions options;
  HttpLimits limits;
  std::unique_ptr<ssl::context> tls;
  std::unique_ptr<ConnectionTable> table;
  std::atomic<std::size_t> buffered{0};  ///< request bytes held, all connections together
  std::atomic<std::uint64_t> next_id{1};
  std::atomic<bool> closing{false};
  int port = 0;
  int collector = -1;  ///< the /metrics collector of the gauges below, from bind()

  std::mutex sessions_mutex;  ///< guards sessions
  std::unordered_map<std::uint64_t, std::weak_ptr<SessionBase>> sessions;

  std::mutex stop_mutex;  ///< guards stop_requested
  std::condition_variable stop_cv;
  bool stop_requested = false;

  std::unique_ptr<WorkerPool> workers;
  net::io_context ioc{std::max(1, options.io_threads)};
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc};

  void load_tls();
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  template <bool kTls>
  void open_session(std::uint64_t id, tcp::socket socket, const std::string& remote);
  void close_sessions(const char* reason, bool unless_answering);
  void forget(std::uint64_t id);
  std::size_t open_sessions();
};

namespace {

void note_closed(const char* reason) {
  Metrics::global().inc("mlswarm_http_connections_closed_total", {{"reason", reason}});
}

HttpReply busy(const std::string& why) {
  HttpReply reply = HttpReply::error(Error(ErrorCode::kUnavailable, "server busy: " + why));
  reply.headers["Retry-After"] = "1";
  return reply;
}

bool asks_to_close(const HttpRequest& request) {
  std::string connection = request.header("connection");
  std::transform(connection.begin(), connection.end(), connection.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return connection.find("close") != std::string::npos;
}

/// One connection: reads and parses requests one at a time, admits each head, hands complete
/// requests to a worker (or answers a probe at once), and writes the replies in order. Its
/// members are used by one thread at a time: its strand's handlers, or, from a complete request
/// until the worker hands it back (`answering_`), the worker that handles it (which posts the
/// reply, or the connection itself, back to the strand). Lives as long as an operation (or a
/// task) holds it.
template <bool kTls>
class Session : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
 public:
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

  Session(HttpServer::Impl& server, std::uint64_t id, tcp::socket&& socket, std::string remote, std::string local)
      : server_(server),
        id_(id),
        stream_(make_stream(server, std::move(socket))),
        framer_(server.options.max_head_bytes),
        remote_(std::move(remote)),
        local_(std::move(local)) {}

  ~Session() override {
    release_charge();
    server_.table->close(id_);
    server_.forget(id_);
  }

  /// Starts reading, on the connection's strand; the head's deadline runs from now.
  void launch() {
    net::dispatch(lowest().get_executor(), [self = this->shared_from_this()] { self->start(); });
  }

  void close_soon(const char* reason, bool unless_answering) override {
    net::dispatch(lowest().get_executor(), [self = this->shared_from_this(), reason, unless_answering] {
      if (self->closed_ || (unless_answering && self->answering_)) return;
      note_closed(reason);
      self->close_now();
    });
  }

 private:
  static Stream make_stream(HttpServer::Impl& server, tcp::socket&& socket) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *server.tls);
    } else {
      return Stream(std::move(socket));
    }
  }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void start() {
    lowest().expires_after(server_.options.head_timeout);
    if constexpr (kTls) {
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->fail(ec);
        self->step();
      });
    } else {
      step();
    }
  }

  void set_waiting(bool waiting) {
    waiting_ = waiting;
    server_.table->set_waiting(id_, waiting);
  }

  /// Parses what has come: reads more, hands a request on, or answers an error.
  void step() {
    while (!closed_) {
      switch (framer_.parse()) {
        case RequestFramer::Event::kNeedMore:
          if (charge()) do_read();
          return;
        case RequestFramer::Event::kHead:
          if (!on_head()) return;
          break;
        case RequestFramer::Event::kRequest:
          return on_request();
        case RequestFramer::Event::kError:
          return refuse(HttpReply::error(framer_.error()), false);
        case RequestFramer::Event::kClosed:
          return close_now();
      }
    }
  }

  void do_read() {
    // Small reads for a head, large ones for a body: an idle connection holds little.
    read_buffer_.resize(waiting_ ? 4096 : 64u << 10);
    stream_.async_read_some(
        net::buffer(read_buffer_),
        [self = this->shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, std::size_t n) {
    if (ec == net::error::eof || ec == ssl::error::stream_truncated) {
      framer_.end_of_input();  // a half-close: what has come is still answered
    } else if (ec) {
      return fail(ec);
    }
    framer_.feed(std::string_view(read_buffer_.data(), n));
    if (waiting_) read_buffer_ = std::string();  // an idle connection holds no buffer
    step();
  }

  /// Counts the bytes this connection holds in the server's total. A chunked body that takes
  /// the total over its bound gets a 503 (false); a Content-Length was checked at its head.
  bool charge() {
    const std::size_t held = framer_.held();
    if (held <= charged_) return true;
    const std::size_t total = server_.buffered.fetch_add(held - charged_) + (held - charged_);
    charged_ = held;
    if (!framer_.chunked() || total <= server_.options.max_buffered_bytes) return true;
    Metrics::global().inc("mlswarm_http_busy_total", {{"why", "buffered"}});
    refuse(busy("request bodies held in memory are at their bound"), false);
    return false;
  }
  void release_charge() {
    server_.buffered.fetch_sub(charged_);
    charged_ = 0;
  }

  HttpRequest with_connection(HttpRequest request) const {
    request.remote_addr = remote_;
    request.local_addr = local_;
    request.request_id = request_id_for(request.header("x-request-id"));
    return request;
  }

  /// A complete head: admitted (true: go on reading its body) or refused (answered, false).
  bool on_head() {
    set_waiting(false);
    started_ = Clock::now();
    const HttpRequest head = with_connection(framer_.head());
    if (auto refused = server_.edge.admit(head)) {
      refuse(std::move(*refused), true);
      return false;
    }
    const std::size_t cap = server_.edge.body_cap(head, server_.options.max_body_bytes);
    const std::size_t announced = framer_.announced_body();
    if (announced > cap) {
      refuse(HttpReply::error(Error(ErrorCode::kPayloadTooLarge, "request body too large")), false);
      return false;
    }
    if (announced > 0 && server_.buffered.load() + announced > server_.options.max_buffered_bytes) {
      Metrics::global().inc("mlswarm_http_busy_total", {{"why", "buffered"}});
      refuse(busy("request bodies held in memory are at their bound"), false);
      return false;
    }
    lowest().expires_after(server_.options.request_timeout);  // the body's deadline
    framer_.admit_body(cap);
    if (!framer_.wants_continue()) return true;
    net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->fail(ec);
                       self->step();
                     });
    return false;
  }

  void on_request() {
    answering_ = true;
    HttpRequest request = with_connection(framer_.take());
    const bool keep = !asks_to_close(request) && !framer_.ended();
    if (server_.edge.is_probe(request)) {
      HttpReply reply = server_.edge.answer(request, started_);
      return send(std::move(reply), request, keep);
    }
    const HttpRequest head_of = head_only(request);
    const std::uint64_t ticket = ++last_ticket_;
    queued_ticket_.store(ticket);
    auto task = [self = this->shared_from_this(), request = std::move(request), enqueued = Clock::now(), keep,
                 ticket]() mutable {
      std::uint64_t expected = ticket;
      // The wait's timer answered it already (503): the connection is the strand's again.
      if (!self->queued_ticket_.compare_exchange_strong(expected, 0)) return;
      self->work(std::move(request), enqueued, keep);
    };
    if (!server_.workers->submit(std::move(task))) {
      queued_ticket_.store(0);
      Metrics::global().inc("mlswarm_http_busy_total", {{"why", "queue_full"}});
      HttpReply reply = busy(fmt::format("{} requests already wait for a worker", server_.options.max_queued));
      server_.edge.count(head_of, reply.status, started_);
      return send(std::move(reply), head_of, keep);
    }
    bound_queue_wait(ticket, head_of, keep);
  }

  /// The wait for a worker is a deadline: when no worker has taken the request within
  /// queue_wait, it is answered 503 from here, and a worker that takes it later drops it.
  void bound_queue_wait(std::uint64_t ticket, const HttpRequest& head_of, bool keep) {
    if (!queue_timer_) queue_timer_.emplace(lowest().get_executor());
    queue_timer_->expires_after(server_.options.queue_wait);
    queue_timer_->async_wait([self = this->shared_from_this(), ticket, head_of, keep](beast::error_code ec) {
      std::uint64_t expected = ticket;
      if (ec || !self->queued_ticket_.compare_exchange_strong(expected, 0)) return;  // a worker took it
      Metrics::global().inc("mlswarm_http_busy_total", {{"why", "queue_wait"}});
      HttpReply reply = busy(fmt::format("no worker within {} ms", self->server_.options.queue_wait.count()));
      self->server_.edge.count(head_of, reply.status, self->started_);
      self->send(std::move(reply), head_of, keep);
    });
  }

  /// What a reply needs of its request once the request has gone to a worker: the method,
  /// the id, the path.
  static HttpRequest head_only(const HttpRequest& request) {
    HttpRequest head;
    head.method = request.method;
    head.request_id = request.request_id;
    head.path = request.path;
    return head;
  }

  /// On a worker thread: the handler, then the reply. Over TLS the reply goes back to the
  /// connection's strand. Over plain HTTP the worker writes it itself and keeps the connection
  /// for its next request when that comes within kLinger while no other request waits for a
  /// worker: a handoff to the network thread and back costs more than a small request (measured
  /// on 2 cores: a quarter of the requests/s of a 404). The connection is the worker's alone
  /// meanwhile (`answering_`: nothing else touches it) until it hands it back to the strand.
  void work(HttpRequest request, Clock::time_point enqueued, bool keep) {
    while (true) {
      const HttpRequest head_of = head_only(request);
      HttpReply reply;
      if (Clock::now() - enqueued > server_.options.queue_wait) {
        Metrics::global().inc("mlswarm_http_busy_total", {{"why", "queue_wait"}});
        reply = busy(fmt::format("no worker within {} ms", server_.options.queue_wait.count()));
        server_.edge.count(request, reply.status, started_);
      } else {
        reply = server_.edge.answer(std::move(request), started_);  // moved: a body may be 64 MiB
      }
      if constexpr (kTls) {
        return on_strand(
            [reply = std::move(reply), head_of, keep](Session& s) mutable { s.send(std::move(reply), head_of, keep); });
      } else {
        if (!write_here(std::move(reply), head_of, keep)) return;
        auto next = next_request_here();
        if (!next) return;
        request = std::move(next->request);
        keep = next->keep;
        enqueued = Clock::now();
      }
    }
  }

  /// Runs `f` on the connection's strand, handing the connection back from a worker.
  template <typename F>
  void on_strand(F f) {
    net::post(lowest().get_executor(), [self = this->shared_from_this(), f = std::move(f)]() mutable {
      self->answering_ = false;
      self->cancel_queue_timer();
      f(*self);
    });
  }

  /// Writes a reply from the worker, within the reply's deadline; false when the connection
  /// went back to its strand (to close: not kept alive, or the write failed).
  bool write_here(HttpReply reply, const HttpRequest& request, bool keep) {
    keep = keep && !server_.closing.load() && reply.headers.count("Connection") == 0;
    const std::string head = render_reply_head(reply, request.request_id, keep);
    const std::string_view body = request.method == "HEAD" ? std::string_view() : std::string_view(reply.body);
    const bool written = send_all(head, body, Clock::now() + server_.options.request_timeout);
    release_charge();
    if (!written) {
      on_strand([](Session& s) { s.close_now(); });
      return false;
    }
    if (!keep) {
      on_strand([](Session& s) { s.close_gracefully(); });
      return false;
    }
    return true;
  }

  /// Both parts out on the socket, waiting for room until `deadline`.
  bool send_all(std::string_view head, std::string_view body, Clock::time_point deadline) {
    const int fd = lowest().socket().native_handle();
    std::size_t done = 0;
    const std::size_t total = head.size() + body.size();
    while (done < total) {
      iovec parts[2];
      std::size_t n = 0;
      if (done < head.size()) parts[n++] = {const_cast<char*>(head.data() + done), head.size() - done};
      const std::size_t in_body = done > head.size() ? done - head.size() : 0;
      if (in_body < body.size()) parts[n++] = {const_cast<char*>(body.data() + in_body), body.size() - in_body};
      msghdr message{};
      message.msg_iov = parts;
      message.msg_iovlen = n;
      const ssize_t sent = ::sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent > 0) {
        done += static_cast<std::size_t>(sent);
      } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_for(fd, POLLOUT, deadline)) return false;
      } else if (sent < 0 && errno != EINTR) {
        return false;
      }
    }
    return true;
  }

  /// Waits (at most a second at a time) for `fd` to be ready for `events`; false once `deadline`
  /// has passed, true to try again.
  static bool wait_for(int fd, short events, Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000))) == 1 || Clock::now() < deadline;
  }

  struct Next {
    HttpRequest request;
    bool keep = true;
  };
  /// The connection's next request, read on the worker: one that is complete and admitted
  /// within kLinger; otherwise the connection goes back to its strand as it stands (nothing
  /// came, another request waits for a worker, a body still coming) and nullopt. A refusal or a
  /// framing error is answered here as the strand would answer it.
  std::optional<Next> next_request_here() {
    const auto until = Clock::now() + kLinger;
    while (true) {
      switch (framer_.parse()) {
        case RequestFramer::Event::kNeedMore:
          if (server_.closing.load() || server_.workers->waiting() > 0 || !read_here(until)) {
            hand_back();
            return std::nullopt;
          }
          break;
        case RequestFramer::Event::kHead:
          if (!admit_here()) return std::nullopt;
          break;
        case RequestFramer::Event::kRequest: {
          HttpRequest request = with_connection(framer_.take());
          const bool keep = !asks_to_close(request) && !framer_.ended();
          return Next{std::move(request), keep};
        }
        case RequestFramer::Event::kError:
          refuse_here(HttpReply::error(framer_.error()), false);
          return std::nullopt;
        case RequestFramer::Event::kClosed:
          on_strand([](Session& s) { s.close_now(); });
          return std::nullopt;
      }
    }
  }

  /// Reads what has come within `until`; false when nothing came, or a request began to wait
  /// for a worker meanwhile (the pool's wake_fd), or the server is closing.
  bool read_here(Clock::time_point until) {
    const int fd = lowest().socket().native_handle();
    const int wake = server_.workers->wake_fd();
    while (true) {
      if (server_.workers->waiting() > 0 || server_.closing.load()) return false;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p[2] = {{fd, POLLIN, 0}, {wake, POLLIN, 0}};
      const int ready = ::poll(p, wake >= 0 ? 2 : 1, wake >= 0 ? static_cast<int>(left) : 1);
      if (ready > 0 && p[0].revents != 0) break;
    }
    char buffer[16 << 10];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n == 0) framer_.end_of_input();
    if (n > 0) framer_.feed(std::string_view(buffer, static_cast<std::size_t>(n)));
    return n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }

  /// The next head, admitted on the worker as on_head() admits it on the strand; false when the
  /// connection went back to its strand (a refusal answered, a body to wait for, a 100-continue).
  bool admit_here() {
    started_ = Clock::now();
    const HttpRequest head = with_connection(framer_.head());
    if (auto refused = server_.edge.admit(head)) {
      refuse_here(std::move(*refused), true);
      return false;
    }
    const std::size_t cap = server_.edge.body_cap(head, server_.options.max_body_bytes);
    const std::size_t announced = framer_.announced_body();
    if (announced > cap) {
      refuse_here(HttpReply::error(Error(ErrorCode::kPayloadTooLarge, "request body too large")), false);
      return false;
    }
    if (announced > 0 && server_.buffered.load() + announced > server_.options.max_buffered_bytes) {
      Metrics::global().inc("mlswarm_http_busy_total", {{"why", "buffered"}});
      refuse_here(busy("request bodies held in memory are at their bound"), false);
      return false;
    }
    lowest().expires_after(server_.options.request_timeout);  // the body's deadline, if the strand reads it
    framer_.admit_body(cap);
    if (framer_.wants_continue() || !charge_here()) {
      on_strand([continue_first = framer_.wants_continue()](Session& s) {
        if (!continue_first) return s.step();
        net::async_write(s.stream_, net::buffer(kContinue.data(), kContinue.size()),
                         [self = s.shared_from_this()](beast::error_code ec, std::size_t) {
                           if (ec) return self->fail(ec);
                           self->step();
                         });
      });
      return false;
    }
    return true;
  }

  /// charge() on the worker: a chunked body over the bound goes back to the strand, which refuses it.
  bool charge_here() {
    const std::size_t held = framer_.held();
    if (held <= charged_) return true;
    const std::size_t total = server_.buffered.fetch_add(held - charged_) + (held - charged_);
    charged_ = held;
    return !framer_.chunked() || total <= server_.options.max_buffered_bytes;
  }

  /// refuse() on the worker: the reply written here, the connection kept or closed as refuse() would.
  void refuse_here(HttpReply reply, bool may_keep) {
    const HttpRequest request = with_connection(framer_.head());
    server_.edge.count(request, reply.status, started_);
    const bool keep = may_keep && !asks_to_close(request) && framer_.skip_bodyless() && !framer_.ended();
    if (write_here(std::move(reply), request, keep)) hand_back();
  }

  /// Back to the strand between requests: the next head's deadline from now.
  void hand_back() {
    on_strand([](Session& s) {
      if (s.server_.closing.load()) return s.close_now();
      if (!s.framer_.started()) s.set_waiting(true);
      if (!s.framer_.started()) s.lowest().expires_after(s.server_.options.head_timeout);
      s.step();
    });
  }

  /// A refusal (counted): the reply, then the connection closes unless `may_keep` and nothing
  /// of the request is left unread: a refused body is neither read nor drained.
  void refuse(HttpReply reply, bool may_keep) {
    const HttpRequest request = with_connection(framer_.head());
    server_.edge.count(request, reply.status, started_);
    const bool keep = may_keep && !asks_to_close(request) && framer_.skip_bodyless() && !framer_.ended();
    send(std::move(reply), request, keep);
  }

  void send(HttpReply reply, const HttpRequest& request, bool keep) {
    cancel_queue_timer();
    if (closed_) return;
    set_waiting(false);
    keep = keep && !server_.closing.load() && reply.headers.count("Connection") == 0;
    wire_head_ = render_reply_head(reply, request.request_id, keep);
    wire_body_ = request.method == "HEAD" ? std::string() : std::move(reply.body);
    lowest().expires_after(server_.options.request_timeout);  // the reply's deadline
    const std::array<net::const_buffer, 2> buffers{net::buffer(wire_head_), net::buffer(wire_body_)};
    net::async_write(stream_, buffers, [self = this->shared_from_this(), keep](beast::error_code ec, std::size_t) {
      self->on_write(ec, keep);
    });
  }

  void on_write(beast::error_code ec, bool keep) {
    answering_ = false;
    wire_head_ = std::string();
    wire_body_ = std::string();
    release_charge();
    if (ec) return fail(ec);
    if (!keep) return close_gracefully();
    set_waiting(true);
    lowest().expires_after(server_.options.head_timeout);  // the next head's deadline
    step();
  }

  void fail(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      const bool slow = framer_.started();
      note_closed(slow ? "deadline" : "idle");
      if (slow && log_allowed("http slow client", std::chrono::seconds(60))) {
        spdlog::warn(
            "HTTP: closed a connection from {} whose request did not arrive within its deadline (head {} ms, body "
            "{} ms); later ones are counted in mlswarm_http_connections_closed_total",
            remote_, server_.options.head_timeout.count(), server_.options.request_timeout.count());
      }
    }
    close_now();
  }

  /// After the last reply: our side shut, then a short wait for the client's own close, so
  /// that bytes it still sends do not turn the close into a reset that loses the reply.
  void close_gracefully() {
    lowest().expires_after(std::chrono::seconds(1));
    if constexpr (kTls) {
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->close_now(); });
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      drain_after_close(0);
    }
  }
  void drain_after_close(std::size_t drained) {
    read_buffer_.resize(4096);
    lowest().async_read_some(net::buffer(read_buffer_),
                             [self = this->shared_from_this(), drained](beast::error_code ec, std::size_t n) {
                               if (ec || drained + n > (64u << 10)) return self->close_now();
                               self->drain_after_close(drained + n);
                             });
  }

  /// The wait's timer holds the connection until it fires: stopped once a worker took the
  /// request (so a shutdown does not wait for it).
  void cancel_queue_timer() {
    if (queue_timer_) queue_timer_->cancel();
  }

  void close_now() {
    cancel_queue_timer();
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }

  static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  /// How long a worker keeps a connection for its next request (the old accept loop measured
  /// 10 ms as the point past which waiting longer gained nothing).
  static constexpr std::chrono::milliseconds kLinger{10};

  HttpServer::Impl& server_;
  const std::uint64_t id_;
  Stream stream_;
  RequestFramer framer_;
  std::string read_buffer_;
  std::string wire_head_;
  std::string wire_body_;
  const std::string remote_;
  const std::string local_;
  std::size_t charged_ = 0;
  Clock::time_point started_ = Clock::now();
  bool waiting_ = true;
  /// From a complete request until its reply is written; while a worker holds the connection,
  /// nothing else touches it (close_soon leaves it alone).
  std::atomic<bool> answering_{false};
  bool closed_ = false;
  /// The request waiting for a worker (its ticket; 0: none): a worker takes it, or the wait's
  /// timer answers it, whichever swaps it to 0 first.
  std::atomic<std::uint64_t> queued_ticket_{0};
  std::uint64_t last_ticket_ = 0;                 ///< strand only
  std::optional<net::steady_timer> queue_timer_;  ///< strand only
};

}  // namespace

void HttpServer::Impl::load_tls() {
  tls = std::make_unique<ssl::context>(ssl::context::tls_server);
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  beast::error_code ec;
  tls->use_certificate_chain_file(options.tls_cert_file, ec);
  if (!ec) tls->use_private_key_file(options.tls_key_file, ssl::context::pem, ec);
  if (ec) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("cannot load the TLS certificate {} or key {} (PEM expected, key unencrypted): {}",
                            options.tls_cert_file, options.tls_key_file, ec.message()),
                "TLS_CERT_FILE");
  }
}

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc),
                        [this](beast::error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void HttpServer::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || closing.load()) return;
  if (ec) {
    // Out of descriptors, or a transient error: the connection stays in the listen queue;
    // try again shortly instead of spinning.
    if (log_allowed("http accept " + ec.message(), std::chrono::seconds(60))) {
      spdlog::warn("HTTP: cannot accept a connection: {}; retrying every 50 ms", ec.message());
    }
    accept_retry.expires_after(std::chrono::milliseconds(50));
    accept_retry.async_wait([this](beast::error_code e) {
      if (!e && !closing.load()) do_accept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // headers then body: no Nagle delay
  const std::string remote = socket.remote_endpoint(ignored).address().to_string(ignored);
  const std::uint64_t id = next_id.fetch_add(1);
  const ConnectionTable::Admission admission = table->open(id, remote);
  if (admission.evict) {
    std::shared_ptr<SessionBase> victim;
    {
      std::lock_guard lock(sessions_mutex);
      auto it = sessions.find(*admission.evict);
      if (it != sessions.end()) victim = it->second.lock();
    }
    if (victim) victim->close_soon("displaced", false);
  }
  if (!admission.accepted) {
    note_closed("refused");
    socket.close(ignored);
  } else if (tls) {
    open_session<true>(id, std::move(socket), remote);
  } else {
    open_session<false>(id, std::move(socket), remote);
  }
  do_accept();
}

template <bool kTls>
void HttpServer::Impl::open_session(std::uint64_t id, tcp::socket socket, const std::string& remote) {
  beast::error_code ignored;
  const auto local = socket.local_endpoint(ignored);
  auto session = std::make_shared<Session<kTls>>(
      *this, id, std::move(socket), remote, fmt::format("{}:{}", local.address().to_string(ignored), local.port()));
  {
    std::lock_guard lock(sessions_mutex);
    sessions[id] = session;
  }
  session->launch();
}

void HttpServer::Impl::close_sessions(const char* reason, bool unless_answering) {
  std::vector<std::shared_ptr<SessionBase>> open;
  {
    std::lock_guard lock(sessions_mutex);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) s->close_soon(reason, unless_answering);
}

void HttpServer::Impl::forget(std::uint64_t id) {
  std::lock_guard lock(sessions_mutex);
  sessions.erase(id);
}

std::size_t HttpServer::Impl::open_sessions() {
  std::lock_guard lock(sessions_mutex);
  return sessions.size();
}

HttpServer::HttpServer(HttpService service, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(service), std::move(options))) {
  const auto& o = impl_->options;
  if (!o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
    if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "TLS needs both a certificate file and a key file", "TLS_CERT_FILE");
    }
    impl_->load_tls();
  }
}

HttpServer::~HttpServer() {
  stop();
  if (impl_->collector >= 0) Metrics::global().remove_collector(impl_->collector);
}

void HttpServer::bind(const std::string& host, int port) {
  Impl& s = *impl_;
  beast::error_code ec;
  tcp::resolver resolver(s.ioc);
  const auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
  if (!ec && found.empty()) ec = net::error::host_not_found;
  if (!ec) {
    const tcp::endpoint endpoint = found.begin()->endpoint();
    s.acceptor.open(endpoint.protocol(), ec);
    if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) s.acceptor.bind(endpoint, ec);
    if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    throw Error(ErrorCode::kUnavailable, fmt::format("cannot listen on {}:{} ({})", host, port, ec.message()));
  }
  s.port = s.acceptor.local_endpoint().port();
  s.limits = settle_http_limits(s.options, raise_file_limit());
  s.table = std::make_unique<ConnectionTable>(s.limits.max_connections, s.limits.max_connections_per_address);
  Metrics& m = Metrics::global();
  m.describe("mlswarm_http_connections", "gauge", "open HTTP connections");
  m.describe("mlswarm_http_connections_max", "gauge",
             "the most open HTTP connections (the file limit less its reserve)");
  m.describe("mlswarm_http_buffered_bytes", "gauge", "request bodies held in memory, all connections together");
  if (s.collector < 0) {
    s.collector = m.add_collector([&s](Metrics& metrics) {
      metrics.set("mlswarm_http_connections", {}, static_cast<double>(s.table->size()));
      metrics.set("mlswarm_http_connections_max", {}, static_cast<double>(s.limits.max_connections));
      metrics.set("mlswarm_http_buffered_bytes", {}, static_cast<double>(s.buffered.load()));
    });
  }
  spdlog::info(
      "HTTP{} on {}:{}: at most {} connections ({} per client address; file limit {}, {} kept for the daemon's own "
      "files and calls), {} workers, heads within {} ms",
      s.tls ? "S" : "", host, s.port, s.limits.max_connections, s.limits.max_connections_per_address,
      s.limits.file_limit, s.limits.fd_reserve, s.options.threads, s.options.head_timeout.count());
}

int HttpServer::port() const { return impl_->port; }

const HttpLimits& HttpServer::limits() const { return impl_->limits; }

bool HttpServer::run() {
  Impl& s = *impl_;
  if (!s.table) return false;  // never bound
  s.workers = std::make_unique<WorkerPool>(s.options.threads, s.options.max_queued);
  auto guard = net::make_work_guard(s.ioc);
  std::vector<std::thread> io;
  for (int i = 0; i < std::max(1, s.options.io_threads); ++i) io.emplace_back([&s] { s.ioc.run(); });
  net::post(s.ioc, [&s] { s.do_accept(); });
  {
    std::unique_lock lock(s.stop_mutex);
    s.stop_cv.wait(lock, [&s] { return s.stop_requested; });
  }
  // Stop accepting; close every connection at once but those whose request a worker handles
  // or whose reply goes out: they finish (each closes after its reply), for at most a few seconds.
  s.closing = true;
  s.workers->wake_lingering();
  net::post(s.ioc, [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_retry.cancel();
  });
  s.close_sessions("shutdown", true);
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (s.open_sessions() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s.workers->stop();  // joins (a lingering worker hands its connection back); what is queued is dropped
  s.close_sessions("shutdown", false);
  guard.reset();
  const auto drained = Clock::now() + std::chrono::seconds(2);
  while (s.open_sessions() > 0 && Clock::now() < drained) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.ioc.stop();
  for (auto& t : io) t.join();
  return true;
}

void HttpServer::stop() {
  {
    std::lock_guard lock(impl_->stop_mutex);
    impl_->stop_requested = true;
  }
  impl_->stop_cv.notify_all();
}

}  // namespace mlswarm
