//! The beanstalkd request framer against a real beanstalkd: streams of pipelined commands,
//! puts (well-formed, malformed, too big, without their `\r\n`), over-long lines, stray `\r`
//! and `\n`, NULs and `quit`, sent in random chunks. The server must give exactly the answers
//! the framer predicts, in order, of the kinds it predicts (`BAD_FORMAT` for a long line,
//! `JOB_TOO_BIG`, `EXPECTED_CRLF` or `INSERTED` for a put, `USING` for `use`, the connection
//! closed after `quit`), and a `list-tube-used` after the stream must name the tube the framer
//! says the connection uses.
//!

use crate::support::beanstalkd::Beanstalkd;
use fanout_engine::framing::beanstalkd::{
    Command, Discarded, Request, RequestFramer, ResponseFramer, ResponseKind,
};
use fanout_engine::Bytes;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The maximum job size the server runs with: small, so bodies too big are common.
const MAX_JOB: u32 = 64;

/// A small deterministic generator (xorshift), so every run sends the same streams.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One stream of the kinds of bytes that decide beanstalkd's framing.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(30) + 1 {
        let token: Vec<u8> = match rng.below(14) {
            0 | 1 => {
                let n = rng.below(80);
                let mut put = format!("put 1 {} 60 {n}\r\n", rng.below(100)).into_bytes();
                put.extend((0..n).map(|i| b'a' + (i % 26) as u8));
                // Mostly the \r\n the server expects, sometimes two other bytes.
                put.extend_from_slice(if rng.below(4) == 0 { b"XY" } else { b"\r\n" });
                put
            }
            2 => b"put 1 2 3 x\r\n".to_vec(),
            3 => b"put 0 0 1 70 junk\r\n".to_vec(),
            4 => format!("use t{}\r\n", rng.below(3)).into_bytes(),
            5 => b"use -bad\r\n".to_vec(),
            6 => b"stats-tube default\r\n".to_vec(),
            7 => b"delete 999999\r\n".to_vec(),
            8 => vec![b'q'; rng.below(500) as usize + 1],
            9 => b"\r".to_vec(),
            10 => b"\n".to_vec(),
            11 => vec![0],
            12 if rng.below(8) == 0 => b"quit\r\n".to_vec(),
            _ => b"list-tube-used\r\n".to_vec(),
        };
        out.extend(token);
    }
    out
}

/// `bytes` up to the end of its first `quit` line, if it has one: the server closes the
/// connection there, and bytes it never read would make its kernel answer the close with a
/// reset, which can discard answers not yet read on this side.
fn up_to_quit(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut framer = RequestFramer::new(MAX_JOB);
    framer.push(Bytes::copy_from_slice(&bytes));
    let mut at = 0;
    while let Some(piece) = framer.pop() {
        at += piece.len() as usize;
        if let Request::Command {
            command: Command::Quit,
            ..
        } = piece
        {
            bytes.truncate(at);
            break;
        }
    }
    bytes
}

/// What the framer says the server answers for a piece: the first word it must begin with
/// (`None`: any one answer), or that the connection closes.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Word(Option<&'static str>),
    Using(String),
    Closed,
}

fn expectations(framer: &mut RequestFramer, bytes: &[u8], out: &mut Vec<Expect>) -> Vec<Request> {
    framer.push(Bytes::copy_from_slice(bytes));
    let mut pieces = Vec::new();
    while let Some(piece) = framer.pop() {
        let e = match &piece {
            Request::Command { command, .. } => match command {
                Command::Quit => Some(Expect::Closed),
                Command::Use { tube } => Some(Expect::Using(tube.clone())),
                _ => Some(Expect::Word(None)),
            },
            Request::Put { body, .. } => Some(Expect::Word(Some(match body.ends_with(b"\r\n") {
                true => "INSERTED",
                false => "EXPECTED_CRLF",
            }))),
            Request::Discard {
                ends: Some(Discarded::LongLine),
                ..
            } => Some(Expect::Word(Some("BAD_FORMAT"))),
            Request::Discard {
                ends: Some(Discarded::TooBig),
                ..
            } => Some(Expect::Word(Some("JOB_TOO_BIG"))),
            _ => None,
        };
        out.extend(e);
        pieces.push(piece);
    }
    pieces
}

/// Reads answers until `n` have come (or the server closed), then for `quiet` longer.
fn answers(conn: &mut TcpStream, n: usize, quiet: Duration) -> (Vec<ResponseKind>, bool) {
    let mut framer = ResponseFramer::new(1 << 20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_until: Option<Instant> = None;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(k) => framer.push(Bytes::copy_from_slice(&buf[..k])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("reading beanstalkd's answers: {e}"),
        }
        while let Some(r) = framer.pop().expect("beanstalkd's answers frame") {
            got.push(r.kind);
        }
        let now = Instant::now();
        if got.len() >= n {
            let until = *quiet_until.get_or_insert(now + quiet);
            if now >= until {
                return (got, false);
            }
        }
        assert!(
            now < deadline,
            "waited 10 s for {n} answers, got {}",
            got.len()
        );
    }
}

fn matches(expect: &Expect, got: &ResponseKind) -> bool {
    match (expect, got) {
        (Expect::Word(None), _) => true,
        (Expect::Word(Some("INSERTED")), ResponseKind::Inserted(_)) => true,
        (Expect::Word(Some(w)), ResponseKind::Word(g)) => w == g,
        (Expect::Using(t), ResponseKind::Using(g)) => t == g,
        _ => false,
    }
}

#[test]
fn the_beanstalkd_framer_predicts_every_answer_of_a_real_server() {
    let max_job = MAX_JOB.to_string();
    let server = Beanstalkd::start(&["-z", &max_job]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for case in 0..120 {
        let bytes = up_to_quit(stream(&mut rng));
        let mut framer = RequestFramer::new(MAX_JOB);
        let mut expect = Vec::new();
        let mut conn = server.raw();
        let mut at = 0;
        while at < bytes.len() {
            let n = (rng.below(64) as usize + 1).min(bytes.len() - at);
            let chunk = &bytes[at..at + n];
            at += n;
            expectations(&mut framer, chunk, &mut expect);
            if conn.write_all(chunk).is_err() {
                break; // the server closed after a quit
            }
        }
        let closes = expect.contains(&Expect::Closed);
        // After the stream, a list-tube-used answered `USING <the tube the framer tracked>`,
        // when the framer says the server is at the start of a command.
        let tube = framer.used_tube().to_string();
        let mut probe = Vec::new();
        let sentinel = b"list-tube-used\r\n";
        let probe_pieces = expectations(&mut framer, sentinel, &mut probe);
        let probed = !closes
            && matches!(&probe_pieces[..], [Request::Command { line, .. }] if &line[..] == sentinel);
        if probed {
            conn.write_all(sentinel).unwrap();
            expect.push(Expect::Using(tube));
        }
        let wanted = expect.iter().filter(|e| **e != Expect::Closed).count();
        let (got, closed) = answers(&mut conn, wanted, Duration::from_millis(100));
        let context = || {
            format!(
                "case {case}: stream {:?}\nexpected {expect:?}\ngot {got:?}",
                String::from_utf8_lossy(&bytes)
            )
        };
        assert_eq!(got.len(), wanted, "{}", context());
        assert_eq!(closed, closes, "closed after quit: {}", context());
        let open: Vec<&Expect> = expect.iter().filter(|e| **e != Expect::Closed).collect();
        for (e, g) in open.iter().zip(&got) {
            assert!(matches(e, g), "{e:?} answered {g:?}: {}", context());
        }
        checked += usize::from(probed);
    }
    assert!(
        checked > 30,
        "only {checked} streams ended where a probe could follow"
    );
}
