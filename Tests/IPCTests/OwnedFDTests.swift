import Glibc
import IPC
import Testing

@Suite("OwnedFD")
struct OwnedFDTests {
    @Test("dropping closes, close() closes, release() hands the descriptor on")
    func ownership() {
        let dropped = makePipe()
        do {
            let owner = OwnedFD(dropped.write)
            #expect(owner.rawValue == dropped.write)
        }
        #expect(pipeReachedEOF(dropped.read))
        close(dropped.read)

        let closed = makePipe()
        OwnedFD(closed.write).close()
        #expect(pipeReachedEOF(closed.read))
        close(closed.read)

        let released = makePipe()
        let raw = OwnedFD(released.write).release()
        #expect(raw == released.write)
        #expect(isOpen(raw))
        close(raw)
        close(released.read)
    }

    @Test("an optional OwnedFD can be moved out and passed on")
    func optionalMove() {
        func consume(_ fd: consuming OwnedFD) -> Int32 { fd.release() }
        let pipe = makePipe()
        var slot: OwnedFD? = OwnedFD(pipe.write)
        if let fd = slot.take() {
            let raw = consume(fd)
            #expect(raw == pipe.write)
            close(raw)
        }
        let stillThere = slot != nil
        #expect(!stillThere)
        #expect(pipeReachedEOF(pipe.read))
        close(pipe.read)
    }
}
