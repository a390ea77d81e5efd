// A Hummingbird 2 app that serves a page at `/` and PeerJS signalling at `/peerjs`, in one
// process (README, "Embed it in a Swift server"). Run it with
//   swift run peerjs-hummingbird-example --port 8080
// and open http://127.0.0.1:8080/ in two browser tabs.
import ArgumentParser
import Hummingbird
import Logging
import PeerJSHummingbird
import PeerJSKit

@main
struct HummingbirdExample: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peerjs-hummingbird-example",
        abstract: "A Hummingbird app with PeerJS signalling mounted at /peerjs.")

    @Option(help: "The address to listen on.") var host = "127.0.0.1"
    @Option(help: "The port to listen on (0: any free port; the log line says which).") var port = 8080
    @Option(help: "Refuse ids that start with this prefix (shows the auth hook); empty: allow all.") var refusePrefix = "admin"

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = {
            var logger = Logger(label: "peerjs-hummingbird-example")
            logger.logLevel = .info
            return logger
        }()
        let refusePrefix = self.refusePrefix
        // The PeerJS client's options: { host, port, path: "/peerjs" }.
        let peers = try PeerJSServer(
            configuration: .init(protocolSettings: .init(allowDiscovery: true), path: "/peerjs"),
            logger: logger,
            authorize: { registration in
                guard !refusePrefix.isEmpty, registration.id.hasPrefix(refusePrefix) else { return .allow }
                return .deny(reason: "ids starting with \(refusePrefix) are reserved")
            })

        let router = Router()
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: Self.page)))
        }
        router.get("/health") { _, _ in "ok" }

        let app = Application(
            router: router,
            server: .peerJS(peers),
            configuration: .init(address: .hostname(host, port: port), serverName: "peerjs-hummingbird-example"),
            onServerRunning: { channel in
                // A line scripts can wait for: the port actually bound (with --port 0).
                logger.info("peerjs-hummingbird-example listening on \(host):\(channel.localAddress?.port ?? port)")
            },
            // Every connection on the PeerJS server's loop: its state lives there.
            eventLoopGroupProvider: .shared(peers.eventLoop),
            logger: logger)

        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for await event in peers.events {
                    switch event {
                    case .connected(let id, let key, _, let ip): logger.info("connection", metadata: ["id": "\(id)", "key": "\(key)", "ip": "\(ip)"])
                    case .disconnected(let id, _, _, _, let reason): logger.info("disconnect", metadata: ["id": "\(id)", "reason": "\(reason.rawValue)"])
                    }
                }
            }
            do {
                try await app.runService()
            } catch {
                await peers.shutdown()  // ends `events`, and with it the task above
                throw error
            }
            await peers.shutdown()
        }
    }

    /// Two tabs of this page can talk: each registers, and one connects to the other's id.
    static let page = """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>PeerJS on Hummingbird</title>
        <script src="https://unpkg.com/peerjs@1.5.4/dist/peerjs.min.js"></script></head>
        <body>
        <p>My id: <b id="me">…</b></p>
        <p><input id="other" placeholder="the other tab's id"> <button id="call">Connect</button></p>
        <p><input id="text" placeholder="message"> <button id="send">Send</button></p>
        <pre id="log"></pre>
        <script>
        const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
        const peer = new Peer({ host: location.hostname, port: Number(location.port) || 80, path: "/peerjs" });
        let conn = null;
        const use = (c) => { conn = c; c.on("data", (d) => log("them: " + d)); c.on("open", () => log("connected to " + c.peer)); };
        peer.on("open", (id) => { document.getElementById("me").textContent = id; });
        peer.on("connection", use);
        peer.on("error", (e) => log("error: " + e.type));
        document.getElementById("call").onclick = () => use(peer.connect(document.getElementById("other").value));
        document.getElementById("send").onclick = () => { const t = document.getElementById("text").value; conn.send(t); log("me: " + t); };
        </script></body></html>
        """
}
