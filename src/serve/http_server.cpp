// The HTTP/1.1 transport of serve.
#include "serve/http_server.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string_view>

namespace dpa::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

const char* http_reason(int s) {
  switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

namespace {
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] != '%') {
      out += in[i];
    } else {
      const int hi = i + 2 < in.size() ? hex_digit(in[i + 1]) : -1;
      const int lo = hi >= 0 ? hex_digit(in[i + 2]) : -1;
      if (lo < 0) return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
  }
  return true;
}
}  // namespace

std::optional<std::vector<std::pair<std::string, std::string>>> query_params(const std::string& target) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::size_t q = target.find('?');
  if (q == std::string::npos) return out;
  std::string_view rest(target);
  rest.remove_prefix(q + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    std::string key, value;
    if (!percent_decode(pair.substr(0, eq), key)) return std::nullopt;
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value)) return std::nullopt;
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

HttpSession::HttpSession(tcp::socket socket, const Handler& handler, uint64_t max_body_bytes)
    : socket_(std::move(socket)), handler_(handler), max_body_(max_body_bytes), read_timer_(socket_.get_executor()) {
  beast::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
}

void HttpSession::start() { do_read(); }

void HttpSession::do_read() {
  parser_.emplace();
  parser_->body_limit(max_body_);
  parser_->header_limit(64 * 1024);
  responding_ = finished_ = in_request_ = false;
  on_disconnect_ = nullptr;
  arm_read_timer();
  http::async_read_header(socket_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

// `Expect: 100-continue` (curl sends it with large bodies): say so before reading the body.
void HttpSession::on_header(beast::error_code ec) {
  if (ec || parser_->is_done()) return on_read(ec);
  if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
    static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(cont), [self = shared_from_this()](beast::error_code e, std::size_t) {
      if (e) return self->close();
      self->read_body();
    });
    return;
  }
  read_body();
}

void HttpSession::read_body() {
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
}

std::chrono::milliseconds HttpSession::read_timeout() {
  static const std::chrono::milliseconds t = [] {
    const char* e = std::getenv("DPA_HTTP_READ_TIMEOUT_MS");
    const long v = e ? std::strtol(e, nullptr, 10) : 0;
    return std::chrono::milliseconds(v > 0 ? v : 60'000);
  }();
  return t;
}

// A client that sends part of a request (fewer body bytes than its Content-Length, a header block
// never finished) and then waits would hold the connection forever: cancel the read, answer 408.
void HttpSession::arm_read_timer() {
  read_timed_out_ = false;
  const uint64_t gen = ++read_gen_;  // a handler already queued when the timer was cancelled is stale
  read_timer_.expires_after(read_timeout());
  read_timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
    if (ec || gen != self->read_gen_ || !self->open_ || self->in_request_) return;
    self->read_timed_out_ = true;
    beast::error_code e;
    self->socket_.cancel(e);  // the pending read completes with operation_aborted
  });
}

void HttpSession::on_read(beast::error_code ec) {
  if (!open_) return;
  ++read_gen_;
  read_timer_.cancel();
  if (ec && read_timed_out_) {
    if (!parser_->got_some() && buffer_.size() == 0) return close();  // an idle keep-alive connection
    keep_alive_ = false;
    in_request_ = true;
    send(408, "application/json",
         R"({"error":{"message":"the request did not arrive in time","type":"invalid_request_error","param":null,"code":408}})");
    return;
  }
  if (ec == http::error::body_limit) {
    keep_alive_ = false;
    in_request_ = true;
    const std::string body = fmt::format(
        R"J({{"error":{{"message":"the request body exceeds {} bytes (--max-request-bytes)","type":"invalid_request_error","param":null,"code":413}}}})J",
        max_body_);
    send(413, "application/json", body);
    return;
  }
  if (ec) {  // end of stream, reset, bad request line...
    // A request cut short (the peer half-closed inside the headers or before Content-Length bytes
    // of body came: partial_message) is answered 400 too, not dropped silently; got_some() because
    // the parser has consumed what it read from buffer_.
    if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted && ec != asio::error::eof &&
        ec != asio::error::connection_reset && (buffer_.size() > 0 || parser_->got_some())) {
      keep_alive_ = false;
      in_request_ = true;
      send(400, "application/json",
           R"({"error":{"message":"malformed HTTP request","type":"invalid_request_error","param":null,"code":400}})");
      return;
    }
    close();
    return;
  }
  auto msg = parser_->release();
  HttpRequest req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  req.path = req.target.substr(0, req.target.find('?'));
  for (const auto& f : msg) {
    std::string name(f.name_string());
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    req.headers[name] = std::string(f.value());
  }
  req.body = std::move(msg.body());
  keep_alive_ = msg.keep_alive();
  in_request_ = true;
  watch();
  handler_(req, shared_from_this());
}

// Readable with nothing to read while a request is in flight: the peer closed the connection.
void HttpSession::watch() {
  const uint64_t gen = ++watch_gen_;
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), gen](beast::error_code ec) {
    if (ec || gen != self->watch_gen_ || !self->open_ || !self->in_request_) return;
    beast::error_code e2;
    const std::size_t avail = self->socket_.available(e2);
    if (e2 || avail == 0) self->lost();
    // Pipelined bytes: stop watching; they are read after this response.
  });
}

void HttpSession::lost() {
  if (!open_) return;
  const bool pending = in_request_ && !(finished_ && out_.empty() && !writing_);
  auto cb = std::move(on_disconnect_);
  on_disconnect_ = nullptr;
  close();
  if (pending && cb) cb();
}

void HttpSession::close() {
  if (!open_) return;
  open_ = false;
  ++watch_gen_;
  ++read_gen_;
  read_timer_.cancel();
  beast::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  out_.clear();
}

void HttpSession::send(int status, const std::string& content_type, std::string body,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!open_ || responding_) return;
  responding_ = finished_ = true;
  std::string head = fmt::format("HTTP/1.1 {} {}\r\nServer: dpa_serve\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                                 status, http_reason(status), content_type, body.size());
  for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  queue(std::move(head) + body);
}

void HttpSession::start_stream(int status, const std::string& content_type) {
  if (!open_ || responding_) return;
  responding_ = true;
  queue(fmt::format("HTTP/1.1 {} {}\r\nServer: dpa_serve\r\nContent-Type: {}\r\nCache-Control: no-cache\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
                    status, http_reason(status), content_type, keep_alive_ ? "keep-alive" : "close"));
}

void HttpSession::write_chunk(const std::string& data) {
  if (!open_ || !responding_ || finished_ || data.empty()) return;
  queue(fmt::format("{:x}\r\n", data.size()) + data + "\r\n");
}

void HttpSession::end_stream() {
  if (!open_ || !responding_ || finished_) return;
  finished_ = true;
  queue("0\r\n\r\n");
}

void HttpSession::queue(std::string data) {
  out_.push_back(std::move(data));
  flush();
}

void HttpSession::flush() {
  if (writing_ || !open_) return;
  if (out_.empty()) {
    if (finished_) response_done();
    return;
  }
  writing_ = true;
  asio::async_write(socket_, asio::buffer(out_.front()), [self = shared_from_this()](beast::error_code ec, std::size_t) {
    self->writing_ = false;
    if (ec) {
      self->lost();
      return;
    }
    if (!self->out_.empty()) self->out_.pop_front();
    self->flush();
  });
}

void HttpSession::response_done() {
  if (!in_request_) return;
  in_request_ = false;
  ++watch_gen_;
  beast::error_code ec;
  socket_.cancel(ec);  // the watch
  if (!keep_alive_) {
    // Half-close, then let the peer's remaining bytes drain so the response is not lost to a reset.
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    auto sink = std::make_shared<std::array<char, 4096>>();
    auto drain = std::make_shared<std::function<void(beast::error_code, std::size_t)>>();
    *drain = [self = shared_from_this(), sink, drain](beast::error_code e, std::size_t) {
      if (e) {
        self->close();
        *drain = nullptr;  // break the cycle
        return;
      }
      self->socket_.async_read_some(asio::buffer(*sink), *drain);
    };
    socket_.async_read_some(asio::buffer(*sink), *drain);
    return;
  }
  do_read();
}

HttpServer::HttpServer(asio::io_context& ioc, HttpSession::Handler handler, uint64_t max_body_bytes)
    : ioc_(ioc), handler_(std::move(handler)), max_body_(max_body_bytes), acceptor_(ioc) {}

int HttpServer::listen(const std::string& host, int port) {
  tcp::resolver resolver(ioc_);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive);
  const tcp::endpoint ep = results.begin()->endpoint();
  acceptor_.open(ep.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  accept();
  return acceptor_.local_endpoint().port();
}

void HttpServer::stop_accepting() {
  beast::error_code ec;
  acceptor_.close(ec);
}

void HttpServer::accept() {
  acceptor_.async_accept(ioc_, [this](beast::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      std::make_shared<HttpSession>(std::move(s), handler_, max_body_)->start();
      accept();
      return;
    }
    // Out of descriptors and the like: try again shortly instead of spinning.
    auto t = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(50));
    t->async_wait([this, t](beast::error_code) {
      if (acceptor_.is_open()) accept();
    });
  });
}

}  // namespace dpa::serve
