import Broker
import FuzzSupport

/// libFuzzer's entry: one input is one client connection's bytes (after a control byte), run
/// through the broker's real HTTP / WebSocket pipeline in memory.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzHTTP(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    BrokerPipelineFuzzing.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
enum FuzzHTTP {
    static func main() { FuzzMain.run(fuzzHTTP) }
}
