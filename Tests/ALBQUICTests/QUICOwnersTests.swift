import XCTest

@testable import ALBQUIC

/// The C libraries link (ngtcp2's GnuTLS crypto helper and GnuTLS through the module map's `link` lines,
/// nghttp3 through its shim) and their owners free what they create.
final class QUICOwnersTests: XCTestCase {
    func testStatelessResetTokensAreDerivedFromTheSecretAndTheID() throws {
        let key = try XCTUnwrap(QUICStatelessResetKey(secret: Array(repeating: 7, count: 32)))
        let token = try XCTUnwrap(key.token(for: .of(QUICTestPackets.serverCID)))
        XCTAssertEqual(token.count, 16)
        XCTAssertEqual(key.token(for: .of(QUICTestPackets.serverCID)), token, "computed again, without a table")
        XCTAssertNotEqual(key.token(for: .of(QUICTestPackets.clientDCID)), token)
        let other = try XCTUnwrap(QUICStatelessResetKey(secret: Array(repeating: 8, count: 32)))
        XCTAssertNotEqual(other.token(for: .of(QUICTestPackets.serverCID)), token)
        XCTAssertNotEqual(QUICStatelessResetKey.random().token(for: .of(QUICTestPackets.serverCID)), token)
    }

    func testStatelessResetRefusesWeakSecretsAndIDsV1CannotHave() throws {
        XCTAssertNil(QUICStatelessResetKey(secret: Array(repeating: 1, count: 15)))
        let key = QUICStatelessResetKey.random()
        XCTAssertNil(key.token(for: .of(Array(repeating: 1, count: 21))))
        XCTAssertNotNil(key.token(for: QUICConnectionID()))
    }
}
