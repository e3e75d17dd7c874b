import ALBHTTP
import NIOCore
import XCTest

/// The owner classes of the C encoders: round trips through the real decoders, streaming in parts, and the
/// memory each holds (docs/decisions.md quotes these bounds).
final class CompressionEncoderTests: XCTestCase {
    private let allocator = ByteBufferAllocator()

    private func brotli(_ body: [UInt8], parts: Int, quality: Int = 5, windowBits: Int = 18) throws -> ([UInt8], BrotliEncoder) {
        let encoder = try BrotliEncoder(quality: quality, windowBits: windowBits, sizeHint: body.count)
        var out: [UInt8] = []
        for piece in body.chunked(into: max(1, body.count / parts)) {
            var output: ByteBuffer?
            try encoder.encode(ByteBuffer(bytes: piece), into: &output, allocator: self.allocator)
            out += output.map { Array($0.readableBytesView) } ?? []
        }
        var output: ByteBuffer?
        try encoder.finish(into: &output, allocator: self.allocator)
        out += output.map { Array($0.readableBytesView) } ?? []
        return (out, encoder)
    }

    private func gzip(_ body: [UInt8], parts: Int, level: Int = 5, windowBits: Int = 15) throws -> ([UInt8], GzipEncoder) {
        let encoder = try GzipEncoder(level: level, windowBits: windowBits, memLevel: 8)
        var out: [UInt8] = []
        for piece in body.chunked(into: max(1, body.count / parts)) {
            var output: ByteBuffer?
            try encoder.encode(ByteBuffer(bytes: piece), into: &output, allocator: self.allocator)
            out += output.map { Array($0.readableBytesView) } ?? []
        }
        var output: ByteBuffer?
        try encoder.finish(into: &output, allocator: self.allocator)
        out += output.map { Array($0.readableBytesView) } ?? []
        return (out, encoder)
    }

    func testBrotliRoundTripsWholeAndInParts() throws {
        let body = sampleBody(300_000)
        for parts in [1, 7, 300] {
            let (compressed, _) = try self.brotli(body, parts: parts)
            XCTAssertLessThan(compressed.count, body.count / 3, "parts \(parts)")
            XCTAssertEqual(try Decompress.brotli(compressed), body, "parts \(parts)")
        }
    }

    func testGzipRoundTripsWholeAndInParts() throws {
        let body = sampleBody(300_000)
        for parts in [1, 7, 300] {
            let (compressed, _) = try self.gzip(body, parts: parts)
            XCTAssertEqual(Array(compressed.prefix(2)), [0x1f, 0x8b], "a gzip member")
            XCTAssertLessThan(compressed.count, body.count / 3, "parts \(parts)")
            XCTAssertEqual(try Decompress.gzip(compressed), body, "parts \(parts)")
        }
    }

    func testEmptyAndIncompressibleBodies() throws {
        XCTAssertEqual(try Decompress.brotli(try self.brotli([], parts: 1).0), [])
        XCTAssertEqual(try Decompress.gzip(try self.gzip([], parts: 1).0), [])
        var random = SystemRandomNumberGenerator()
        let noise = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &random) }
        XCTAssertEqual(try Decompress.brotli(try self.brotli(noise, parts: 13).0), noise)
        XCTAssertEqual(try Decompress.gzip(try self.gzip(noise, parts: 13).0), noise)
    }

    /// What one compressing stream holds, counted by the allocator callbacks: bounded by the window, not
    /// by the body (a 4 MiB body holds no more than a 1 MiB one).
    func testMemoryPerStreamIsBoundedByTheWindow() throws {
        let (_, brotliSmall) = try self.brotli(sampleBody(1 << 20), parts: 16)
        let (_, brotliLarge) = try self.brotli(sampleBody(4 << 20), parts: 64)
        let (_, gzipLarge) = try self.gzip(sampleBody(4 << 20), parts: 64)
        let (_, brotliTiny) = try self.brotli(sampleBody(2048), parts: 1, windowBits: 11)
        print("memory per stream: brotli q5 w18 peak \(brotliLarge.peakBytes) B (w11: \(brotliTiny.peakBytes) B); "
              + "gzip 5 w15 m8 peak \(gzipLarge.peakBytes) B")
        XCTAssertGreaterThan(brotliLarge.peakBytes, 0, "the allocator callbacks count")
        XCTAssertLessThanOrEqual(brotliLarge.peakBytes, brotliSmall.peakBytes + 64 * 1024)
        // libbrotli at quality 5: a 1 MiB hash table, the window's ring buffer (2^19 + slack), a metablock's
        // commands and output storage.
        XCTAssertLessThan(brotliLarge.peakBytes, 5_000_000)
        XCTAssertLessThan(brotliTiny.peakBytes, brotliLarge.peakBytes / 2, "a small body's window is small")
        // zlib: 2^(15+2) + 2^(8+9) + about 6 KiB.
        XCTAssertLessThan(gzipLarge.peakBytes, 280_000)
        XCTAssertGreaterThan(gzipLarge.peakBytes, 200_000)
    }

    func testAnEncoderReleasesItsMemoryInDeinit() throws {
        weak var weakBrotli: BrotliEncoder?
        weak var weakGzip: GzipEncoder?
        do {
            let brotli = try BrotliEncoder(quality: 4, windowBits: 18)
            let gzip = try GzipEncoder(level: 5, windowBits: 15, memLevel: 8)
            weakBrotli = brotli
            weakGzip = gzip
            var output: ByteBuffer?
            try brotli.encode(ByteBuffer(bytes: sampleBody(10_000)), into: &output, allocator: self.allocator)
            try gzip.encode(ByteBuffer(bytes: sampleBody(10_000)), into: &output, allocator: self.allocator)
            XCTAssertGreaterThan(brotli.heldBytes, 0)
            XCTAssertGreaterThan(gzip.heldBytes, 0)
        }
        XCTAssertNil(weakBrotli)
        XCTAssertNil(weakGzip)
    }

    func testInvalidParametersAreErrors() {
        XCTAssertThrowsError(try BrotliEncoder(quality: 4, windowBits: 30))
        XCTAssertThrowsError(try GzipEncoder(level: 5, windowBits: 20, memLevel: 8))
    }
}

extension Array {
    func chunked(into size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: self.count, by: size).map { self[$0..<Swift.min($0 + size, self.count)] }
    }
}
