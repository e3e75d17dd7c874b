import CBrotli
import CZlib
import NIOCore

/// Test-only decoders for round trips: what a client does with the compressor's output.
enum Decompress {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func brotli(_ input: [UInt8]) throws -> [UInt8] {
        guard let state = BrotliDecoderCreateInstance(nil, nil, nil) else { throw Failure(description: "no decoder") }
        defer { BrotliDecoderDestroyInstance(state) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        try input.withUnsafeBufferPointer { bytes in
            var availableIn = bytes.count
            var nextIn = bytes.baseAddress
            while true {
                let (result, produced) = chunk.withUnsafeMutableBufferPointer { out -> (BrotliDecoderResult, Int) in
                    var availableOut = out.count
                    var nextOut = out.baseAddress
                    let result = BrotliDecoderDecompressStream(state, &availableIn, &nextIn, &availableOut, &nextOut, nil)
                    return (result, out.count - availableOut)
                }
                output.append(contentsOf: chunk[0..<produced])
                switch result {
                case BROTLI_DECODER_RESULT_SUCCESS:
                    guard availableIn == 0 else { throw Failure(description: "bytes after the end") }
                    return
                case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
                    continue
                case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
                    throw Failure(description: "truncated brotli stream")
                default:
                    throw Failure(description: "corrupt brotli stream")
                }
            }
        }
        return output
    }

    static func gzip(_ input: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        guard alb_inflate_init_gzip(&stream) == Z_OK else { throw Failure(description: "no inflater") }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var input = input
        try input.withUnsafeMutableBufferPointer { bytes in
            stream.next_in = bytes.baseAddress
            stream.avail_in = uInt(bytes.count)
            while true {
                let (code, produced) = chunk.withUnsafeMutableBufferPointer { out -> (Int32, Int) in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(out.count)
                    let code = inflate(&stream, Z_NO_FLUSH)
                    return (code, out.count - Int(stream.avail_out))
                }
                output.append(contentsOf: chunk[0..<produced])
                if code == Z_STREAM_END {
                    guard stream.avail_in == 0 else { throw Failure(description: "bytes after the end") }
                    return
                }
                guard code == Z_OK else { throw Failure(description: "inflate failed: \(code)") }
                if produced == 0 && stream.avail_in == 0 { throw Failure(description: "truncated gzip stream") }
            }
        }
        return output
    }
}

/// A compressible body: JSON-ish text that repeats with variation, `count` bytes.
func sampleBody(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed
    var text: [UInt8] = []
    text.reserveCapacity(count + 64)
    while text.count < count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        text.append(contentsOf: Array("{\"id\":\(state >> 40),\"name\":\"item-\(state % 1000)\",\"ok\":true},".utf8))
    }
    return Array(text.prefix(count))
}
