import IPC

/// Where ``AuthClient`` writes its frames: the auth helper's channel in the broker, a recording
/// stand-in in the tests (which must not start a reader thread on a virtual-time loop).
protocol AuthLink: AnyObject {
    /// Sends one frame; throws ``IPCError/Code/wouldBlock`` when the channel has no room now.
    func sendFrame(_ frame: EncodedFrame) throws(IPCError)
}

extension HandoffChannel: AuthLink {
    func sendFrame(_ frame: EncodedFrame) throws(IPCError) {
        try send(frame)
    }
}

/// What reaches ``AuthClient`` from the helper's side of the channel.
enum AuthLinkEvent: Sendable {
    case verdict(requestID: UInt32, AuthVerdict)
    case closed(String)
}
