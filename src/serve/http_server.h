// A small asynchronous HTTP/1.1 server (Boost.Beast parsing over Asio sockets) for rank 0. All of
// it runs on the threads that run the io_context given to it (serve uses one), so handlers and
// sessions need no locks; other threads talk to it by posting to that io_context. Responses are
// written whole (Content-Length) or as a chunked stream (SSE). While a request is in flight the
// socket is watched for the peer closing it, so a client that goes away is noticed at once.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dpa::serve {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // without the query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

const char* http_reason(int status);

// The query of a request target ("/p?a=1&b=x%20y": {"a", "1"}, {"b", "x y"}), in order,
// percent-decoded with '+' as a space; a key without '=' has an empty value. nullopt when a %
// escape is malformed.
std::optional<std::vector<std::pair<std::string, std::string>>> query_params(const std::string& target);

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  using Handler = std::function<void(const HttpRequest&, const std::shared_ptr<HttpSession>&)>;
  HttpSession(boost::asio::ip::tcp::socket socket, const Handler& handler, uint64_t max_body_bytes);
  void start();

  // The response to the current request; io thread only. `headers` are extra "Name: value" pairs.
  void send(int status, const std::string& content_type, std::string body,
            const std::vector<std::pair<std::string, std::string>>& headers = {});
  void start_stream(int status, const std::string& content_type);
  void write_chunk(const std::string& data);
  void end_stream();

  // Whether the peer is still there (false after a disconnect or a write error).
  bool open() const { return open_; }
  bool responded() const { return responding_; }
  // Called once when the peer goes away before the current response was fully written.
  void on_disconnect(std::function<void()> f) { on_disconnect_ = std::move(f); }
  void close();

 private:
  void do_read();
  void on_header(boost::beast::error_code ec);
  void read_body();
  void on_read(boost::beast::error_code ec);
  void watch();
  void queue(std::string data);
  void flush();
  void response_done();
  void lost();
  void arm_read_timer();

  // The whole request (headers and body) must arrive within this; an idle keep-alive connection
  // is closed after it too. 60 s, or DPA_HTTP_READ_TIMEOUT_MS (the tests use a short one).
  static std::chrono::milliseconds read_timeout();

  boost::asio::ip::tcp::socket socket_;
  Handler handler_;
  uint64_t max_body_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool open_ = true;
  bool responding_ = false;   // a response to the current request has started
  bool finished_ = false;     // ... and is complete (waiting for the writes)
  bool keep_alive_ = true;
  bool in_request_ = false;
  uint64_t watch_gen_ = 0;
  std::function<void()> on_disconnect_;
  boost::asio::steady_timer read_timer_;  // after socket_: built from its executor
  bool read_timed_out_ = false;
  uint64_t read_gen_ = 0;
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& ioc, HttpSession::Handler handler, uint64_t max_body_bytes);
  // Binds and listens; returns the bound port (useful with port 0). Throws on failure.
  int listen(const std::string& host, int port);
  void stop_accepting();

 private:
  void accept();
  boost::asio::io_context& ioc_;
  HttpSession::Handler handler_;
  uint64_t max_body_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace dpa::serve
