//! `keyledger serve --header-read-timeout-secs` through the real binary: a client that
//! dribbles its request head is disconnected after the configured time, while the server
//! keeps serving others (docs/security.md, "Slow clients and oversized requests"; the in-process
//! details are in `crates/server/tests/abuse.rs` and `tls.rs`).

use keyledger_e2e::Ledger;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_slow_loris_is_cut_off_after_the_configured_header_read_timeout() {
    let ledger = Ledger::init();
    let server = ledger.serve(&["--header-read-timeout-secs", "1"]);
    let opened = Instant::now();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let mut closed_after = None;
    let mut served = 0;
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if opened.elapsed() > Duration::from_secs(15) {
            break;
        }
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(opened.elapsed());
            break;
        }
        let mut chunk = [0u8; 256];
        match slow.read(&mut chunk) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Ok(0) | Err(_) => {
                closed_after = Some(opened.elapsed());
                break;
            }
            Ok(n) => panic!("the slow client got an answer: {}", String::from_utf8_lossy(&chunk[..n])),
        }
        // Others are served meanwhile.
        if opened.elapsed() < Duration::from_millis(700) {
            assert_eq!(server.client().send("GET", "/healthz", &[], None).status, 200);
            served += 1;
        }
    }
    let waited = closed_after.expect("the slow client is still connected after 15 s");
    assert!(
        waited >= Duration::from_millis(850) && waited <= Duration::from_millis(2500),
        "cut off after {waited:?} with --header-read-timeout-secs 1"
    );
    assert!(served > 0, "no other request was served while the slow client was connected");
    assert_eq!(server.client().send("GET", "/healthz", &[], None).status, 200, "the server still serves");
    server.stop();
}
