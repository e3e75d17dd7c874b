import Foundation
import NIOCore

/// A real client Initial: the first datagram Debian's `gtlsclient` (ngtcp2 0.12.1 with GnuTLS) sent to a UDP
/// socket on 127.0.0.1, recorded once (1200 bytes: the ClientHello with ALPN h3 in a CRYPTO frame, padded).
/// Its protection keys derive from its own destination connection ID (RFC 9001 section 5.2), so any server
/// can decrypt it, at any time: a real peer's packet for tests that drive a connection with their own clock.
enum QUICRecordedInitial {
    static let base64 = [
        "zQAAAAEScr661Eij8+L+h8rV64TtuGFTEcUdFMEp3cRLiKSv4oVRIGmVAIAABIH0CWY1eM9D6wv3jpmgChNw3QS6wvz+DluIynDc",
        "OzfVAMryupQt5s+o3agkG8VCqa7P3Xclctuk38gurr9r+yn6jn2jT3bQmz7W5iHx55BXGu7VQW3s1IoBzsDuEJ7AomYl7uNLB4RM",
        "oTFcfXo078D/AAZYIgtPV6ZwmRRe4SUTrtekmTSKuEZRK/3hoqfdX1ogJAiCH2xyEl6/WaDEJpRTTaWpi3XO2Wqw1uMuouSaHMgm",
        "6wan7dLX/Tdl89lEk5e3islW2Aj6bBRshL9Ik47iIl64lmiVMzxM/WZIOad6hALbd/9eptoyuwoHTgYjFjs9h1LglzZYIb1NMruU",
        "k0mT7ADDzPFwDXfoAmQKRG14HOLVowuZSprbIFGWfMNPofEKzLnuSAKOj6vMdUEesAE3gniVAb284VqDTACGEM9BpOw3BZPxwkY6",
        "aNxvrTAIITvCugwJucDmujwRLcTcNEgi2wKS76jYV550+pnJXPByOVfs6VbbVYBLda5EdYBvFfglDJ1LHSdH73hHchRKeNzyMYU8",
        "p2UssTt4J9qhRB2FphTKI6dy8ppGP5lLY/uZGvGWa8w/jQW5gE/Wys7xDQnFuqjB+HThP4cxZcAYAZc1QXO1NdSu+DmAYwHxL2RK",
        "Ar/PAkXbHgco2bIcgOZ9kROlWm8CTrX63Wed1KZX0NL7BGSMO3jR58Ps06sPUMY6/Y9OjWMyf1yzT2/yym3O7bb5CdhSEVtwMpMx",
        "LS5qeUqwYXrJF+KxWIbLlG4oUFEnbVuYfgUj32DWzIRCWosd2vY1NuaxXCkcuAOn/rP7j2mFepp9wC8HLSM/9gxU33gJEC0kxrDJ",
        "cOBUjHCkuT7FJR4wI/nle1fPjJtJqwsVwhiocxIabnBXEL+fqD/2xbgUOgkFaCMBmWc+9vtO3UATFBmEfP4fdi7FHEITAfyoVt9m",
        "KoUimSUB8uma+llbj4gCXvGz6vsHIDXUwa8IXT6RjGHGWPS8N8RzErwA+dilMZWVnkvVhoKkaTP99c6FTHQc6moihgYfsCrGa/aG",
        "DnlKGfHMzT/qXhvSlCBzUiJ/nnkK2oK6mdwLx3QSkX5znlfhPs//CR7FIV50h0zaOoYpANI3b12hehQ+A0rge7+3ZQbFc8gznomI",
        "Rcwi9XamwuMGYfnO1Q88OPwh+HDia03udbt/XapCgg+sIuuFimrEeYAc4dTdXvvJ7xNUoREql6k/30lMyYX9bZ0RCNsoEHhjFy5O",
        "2U4s/wcM1+fU+Mlh29UBtOp3/+19XHoCLZFgZLzDML2aqvcAq61LlYpxn0ogJP2bWL3n3nieVgPRp0f9yQQGxWJY5yw+S4+rwDTu",
        "dy4lxqjtPmtNRt9hIsAG7He63HzY30mV7oNPVm940kurXXpEzaxhj24E6B9A6QBGsXtEeY/FRi6lbL1ANOw+wyVUaM+0j7w11wg2",
        "UXcXLN+2idO7OBTs6+68Jj2SBZ0FOjD7wGPIPcgNkXm+6aFsEEq/cyon8ZOtax9LzLyRlsAMq4kNOp9Am/c7wU8VwPeeHzOVw+6T",
    ].joined()

    /// `nil` only if the text above were damaged.
    static var datagram: ByteBuffer? {
        Data(base64Encoded: base64).map { ByteBuffer(bytes: Array($0)) }
    }
}
