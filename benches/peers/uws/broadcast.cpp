// Broadcast server with uWebSockets (C++): every text or binary message any client
// sends goes to every connected client, through one pub/sub topic every connection
// joins. Compression off, one thread, as the fastest C++ engine is usually measured.
// ringway does not ship or vendor uWebSockets: this file is built against a checkout
// of it (see README.md beside it, or UWS_DIR in scripts/bench-compare.sh).
//
//   usage: broadcast [PORT]      (default 9300, on 127.0.0.1)
#include "App.h"

#include <cstdio>
#include <cstdlib>

struct PerSocket {};

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 9300;
    uWS::App app;
    app.ws<PerSocket>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 16 * 1024,
        .idleTimeout = 120,
        // Like the other peers, queue rather than drop for a slow reader.
        .maxBackpressure = 64 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .open = [](auto *ws) { ws->subscribe("all"); },
        // To every client, the sender too, as the other peers do. (`ws->publish`, to
        // everyone but the sender, was measured too: no whole message lost at 0.5 M
        // deliveries/s, but 10% delivered at 2 M/s, so the faster call stays.)
        .message = [&app](auto *, std::string_view message, uWS::OpCode op) {
            app.publish("all", message, op);
        },
    }).listen("127.0.0.1", port, [port](auto *listening) {
        if (listening) {
            std::fprintf(stderr, "uws-broadcast listening on ws://127.0.0.1:%d/\n", port);
        } else {
            std::fprintf(stderr, "uws-broadcast: cannot listen on 127.0.0.1:%d\n", port);
            std::exit(1);
        }
    });
    app.run();
}
