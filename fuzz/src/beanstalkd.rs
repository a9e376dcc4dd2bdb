//! The `beanstalkd` target: [`RequestFramer`] against a reference written independently of it,
//! as a transcription of how beanstalkd 1.12's connection loop reads (`conn_process_io`,
//! `h_conn`, `dispatch_cmd`, `fill_extra_data`, `_skip` in its prot.c): a 224-byte command
//! buffer filled by reads no bigger than its free room, a line end looked for after every read,
//! a job body read into the job, a body too big counted down in bit-bucket mode.
//!
//! Input: the first byte picks the maximum job size (1–64 bytes, so bodies too big are common),
//! the second seeds how the stream is cut into the chunks that arrive (and so the reads); the
//! rest is the client's stream. The framer, fed the same chunks, must give the same answers,
//! each after the same byte of the stream, and the same `quit`.

use fanout_engine::framing::beanstalkd::{Discarded, Request, RequestFramer, LINE_BUFFER};
use fanout_engine::Bytes;

/// What the server answers, and after which byte of the stream (its offset one past it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A command line it dispatched and answered (a rejected `put` line too): the line.
    Line(Vec<u8>),
    /// A `put` and its body (the two bytes after it included).
    Put(Vec<u8>, Vec<u8>),
    /// `BAD_FORMAT` for a line too long.
    LongLine,
    /// `JOB_TOO_BIG`, after the body was thrown away.
    TooBig,
    /// `quit`: nothing more is read.
    Quit,
}

/// Runs one input; panics if the framer and the reference disagree.
pub fn run(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let Some((&seed, stream)) = rest.split_first() else {
        return;
    };
    let max_job = u32::from(size % 64) + 1;
    let chunks = cut(stream, seed);
    let want = reference(&chunks, max_job);
    let got = framed(&chunks, max_job);
    assert_eq!(
        got,
        want,
        "the framer and the reference disagree on {:?} (max job size {max_job})",
        String::from_utf8_lossy(stream)
    );
}

/// `stream` cut into chunks of 1–64 bytes by a small generator seeded with `seed`.
fn cut(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x % 64) as usize + 1;
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// The framer's answers, each with the offset just past the piece that earns it.
pub fn framed(chunks: &[&[u8]], max_job: u32) -> Vec<(u64, Answer)> {
    let mut f = RequestFramer::new(max_job);
    let mut at = 0u64;
    let mut out = Vec::new();
    for chunk in chunks {
        f.push(Bytes::copy_from_slice(chunk));
        while let Some(piece) = f.pop() {
            at += piece.len();
            let answer = match &piece {
                Request::Command { line, command } => match command {
                    fanout_engine::framing::beanstalkd::Command::Quit => Some(Answer::Quit),
                    _ => Some(Answer::Line(line.to_vec())),
                },
                Request::Put { line, body, .. } => Some(Answer::Put(line.to_vec(), body.to_vec())),
                Request::Discard {
                    ends: Some(Discarded::LongLine),
                    ..
                } => Some(Answer::LongLine),
                Request::Discard {
                    ends: Some(Discarded::TooBig),
                    ..
                } => Some(Answer::TooBig),
                Request::Discard { ends: None, .. }
                | Request::PutTooBig { .. }
                | Request::AfterQuit(_) => None,
            };
            if let Some(a) = answer {
                out.push((at, a));
            }
        }
    }
    out
}

/// Where the reference server is, as prot.c's `c->state`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerState {
    WantCommand,
    WantEndline,
    WantData,
    Bitbucket,
    Close,
}

/// The reference: a transcription of the server's reading loop, one connection.
struct Server {
    cmd: [u8; LINE_BUFFER],
    cmd_read: usize,
    cmd_len: usize,
    state: ServerState,
    /// The job being read: its line, its body buffer (size + 2) and how much of it is in.
    in_job: Option<(Vec<u8>, Vec<u8>)>,
    /// Body bytes read so far; in bit-bucket mode, bytes still to throw away.
    in_job_read: u64,
    /// What to answer when the bit bucket empties.
    max_job: u64,
    /// Bytes of the stream the server has read from the socket.
    consumed: u64,
    out: Vec<(u64, Answer)>,
}

/// The server's `scan_line_end`: the first `\r` among the first `size - 1` bytes, if `\n`
/// follows it.
fn scan_line_end(s: &[u8], size: usize) -> usize {
    if size < 2 {
        return 0;
    }
    match s[..size - 1].iter().position(|&b| b == b'\r') {
        Some(i) if s[i + 1] == b'\n' => i + 2,
        _ => 0,
    }
}

/// The server's `read_u32` with an end pointer: spaces, then digits (a `u64`'s worth), at most
/// `u32::MAX`; where the digits stop.
fn read_u32(s: &[u8], from: usize) -> Option<(u64, usize)> {
    let mut i = from;
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    let start = i;
    let mut n: u128 = 0;
    while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
        n = n * 10 + u128::from(d - b'0');
        if n > u128::from(u64::MAX) {
            return None; // strtoumax: ERANGE
        }
        i += 1;
    }
    (i > start && n <= u128::from(u32::MAX)).then_some((n as u64, i))
}

impl Server {
    fn new(max_job: u32) -> Self {
        Server {
            cmd: [0; LINE_BUFFER],
            cmd_read: 0,
            cmd_len: 0,
            state: ServerState::WantCommand,
            in_job: None,
            in_job_read: 0,
            max_job: u64::from(max_job),
            consumed: 0,
            out: Vec::new(),
        }
    }

    /// Where in the stream an answer given now stands: everything read, less what waits in the
    /// command buffer.
    fn answer(&mut self, a: Answer) {
        let at = self.consumed - self.cmd_read as u64 + self.cmd_len as u64;
        self.out.push((at, a));
    }

    /// One `read()` of at most what `avail` holds; returns how many bytes it took.
    fn process_io(&mut self, avail: &[u8]) -> usize {
        match self.state {
            ServerState::WantCommand | ServerState::WantEndline => {
                let r = (LINE_BUFFER - self.cmd_read).min(avail.len());
                self.cmd[self.cmd_read..self.cmd_read + r].copy_from_slice(&avail[..r]);
                self.cmd_read += r;
                self.consumed += r as u64;
                self.cmd_len = scan_line_end(&self.cmd, self.cmd_read);
                if self.cmd_len > 0 {
                    if self.state == ServerState::WantEndline {
                        // The answer comes once the buffered rest moved down.
                        self.answer(Answer::LongLine);
                        self.state = ServerState::WantCommand;
                        self.fill_extra_data();
                    }
                    return r;
                }
                if self.cmd_read == LINE_BUFFER {
                    self.cmd_read = 0;
                    self.state = ServerState::WantEndline;
                }
                r
            }
            ServerState::Bitbucket => {
                let r = (self.in_job_read as usize).min(avail.len());
                self.in_job_read -= r as u64;
                self.consumed += r as u64;
                if self.in_job_read == 0 {
                    self.out.push((self.consumed, Answer::TooBig));
                    self.state = ServerState::WantCommand;
                }
                r
            }
            ServerState::WantData => {
                let (_, body) = self.in_job.as_mut().expect("a job being read");
                let want = body.len() - self.in_job_read as usize;
                let r = want.min(avail.len());
                let from = self.in_job_read as usize;
                body[from..from + r].copy_from_slice(&avail[..r]);
                self.in_job_read += r as u64;
                self.consumed += r as u64;
                self.maybe_enqueue();
                r
            }
            ServerState::Close => avail.len(),
        }
    }

    fn maybe_enqueue(&mut self) {
        let complete = self
            .in_job
            .as_ref()
            .is_some_and(|(_, body)| self.in_job_read as usize == body.len());
        if complete {
            let (line, body) = self.in_job.take().expect("checked");
            self.in_job_read = 0;
            let at = self.consumed - self.cmd_read as u64;
            self.out.push((at, Answer::Put(line, body)));
            self.state = ServerState::WantCommand;
        } else {
            self.state = ServerState::WantData;
        }
    }

    /// After a command: bytes read past its line go into the job body (or the bit bucket),
    /// the rest to the front of the command buffer.
    fn fill_extra_data(&mut self) {
        if self.cmd_len == 0 {
            return;
        }
        let extra = self.cmd_read - self.cmd_len;
        let mut job_bytes = 0;
        if let Some((_, body)) = self.in_job.as_mut() {
            job_bytes = extra.min(body.len());
            body[..job_bytes].copy_from_slice(&self.cmd[self.cmd_len..self.cmd_len + job_bytes]);
            self.in_job_read = job_bytes as u64;
        } else if self.in_job_read > 0 {
            job_bytes = extra.min(self.in_job_read as usize);
            self.in_job_read -= job_bytes as u64;
        }
        let cmd_bytes = extra - job_bytes;
        let from = self.cmd_len + job_bytes;
        self.cmd.copy_within(from..from + cmd_bytes, 0);
        self.cmd_read = cmd_bytes;
        self.cmd_len = 0;
    }

    fn dispatch(&mut self) {
        let line = self.cmd[..self.cmd_len].to_vec();
        let text = &line[..self.cmd_len - 2];
        if text.contains(&0) {
            return self.answer(Answer::Line(line));
        }
        if text.starts_with(b"put ") {
            let parsed = read_u32(text, 4)
                .and_then(|(_, i)| read_u32(text, i))
                .and_then(|(_, i)| read_u32(text, i))
                .and_then(|(_, i)| read_u32(text, i));
            let Some((size, end)) = parsed else {
                return self.answer(Answer::Line(line));
            };
            if size > self.max_job {
                // _skip: throw away size + 2 bytes, answer when they are gone.
                self.in_job = None;
                self.in_job_read = size + 2;
                let at_line = self.consumed - self.cmd_read as u64 + self.cmd_len as u64;
                self.fill_extra_data();
                if self.in_job_read == 0 {
                    let at = at_line + size + 2;
                    self.out.push((at, Answer::TooBig));
                } else {
                    self.state = ServerState::Bitbucket;
                }
                return;
            }
            if end != text.len() {
                return self.answer(Answer::Line(line));
            }
            self.in_job = Some((line, vec![0; size as usize + 2]));
            self.fill_extra_data();
            self.maybe_enqueue();
            return;
        }
        if text.starts_with(b"quit") {
            self.answer(Answer::Quit);
            self.state = ServerState::Close;
            return;
        }
        self.answer(Answer::Line(line));
    }

    /// `h_conn` for one readiness event with `avail` arrived: one read, then every command the
    /// buffer holds.
    fn h_conn(&mut self, avail: &[u8]) -> usize {
        let r = self.process_io(avail);
        while self.state == ServerState::WantCommand && self.cmd_read > 0 {
            self.cmd_len = scan_line_end(&self.cmd, self.cmd_read);
            if self.cmd_len == 0 {
                break;
            }
            self.dispatch();
            self.fill_extra_data();
        }
        r
    }
}

/// The reference server's answers for the stream arriving as `chunks`.
pub fn reference(chunks: &[&[u8]], max_job: u32) -> Vec<(u64, Answer)> {
    let mut s = Server::new(max_job);
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() && s.state != ServerState::Close {
            let r = s.h_conn(rest);
            rest = &rest[r..];
            if r == 0 {
                break;
            }
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_answers_pipelined_commands_and_puts_in_order() {
        let stream = b"use a\r\nput 0 0 1 3\r\nabc\r\nput 0 0 1 99\r\n";
        let got = reference(&[&stream[..10], &stream[10..]], 10);
        assert_eq!(got[0], (7, Answer::Line(b"use a\r\n".to_vec())));
        assert_eq!(
            got[1],
            (
                25,
                Answer::Put(b"put 0 0 1 3\r\n".to_vec(), b"abc\r\n".to_vec())
            )
        );
        assert_eq!(got.len(), 2, "the too-big body has not arrived");
    }

    #[test]
    fn the_reference_and_the_framer_agree_on_long_lines_and_bodies_too_big() {
        let mut stream = vec![b'x'; 230];
        stream.extend_from_slice(b"\r\nput 0 0 1 70\r\n");
        stream.extend(std::iter::repeat_n(b'y', 72));
        stream.extend_from_slice(b"stats\r\nquit\r\nstats\r\n");
        for seed in 0..=255u8 {
            let chunks = cut(&stream, seed);
            assert_eq!(framed(&chunks, 64), reference(&chunks, 64), "seed {seed}");
        }
        let answers: Vec<Answer> = reference(&[&stream], 64)
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            answers,
            [
                Answer::LongLine,
                Answer::TooBig,
                Answer::Line(b"stats\r\n".to_vec()),
                Answer::Quit
            ]
        );
    }
}
