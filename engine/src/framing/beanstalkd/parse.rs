//! What the server makes of one command line: the rules of its number and name parsing, applied
//! to the line without its `\r\n`.

use super::MAX_TUBE_NAME;

/// A well-formed `put` line's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Put {
    pub pri: u32,
    /// Seconds.
    pub delay: u32,
    /// Seconds, as the client asked (the server raises 0 to 1).
    pub ttr: u32,
    /// Body length, without the `\r\n` that follows it.
    pub bytes: u32,
}

/// The commands that name one job by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobVerb {
    Delete,
    Peek,
    StatsJob,
    KickJob,
    Touch,
    ReserveJob,
}

/// A command line as the server parses it, for the commands a proxy may take over. Everything
/// else, including every line the server answers `BAD_FORMAT` or `UNKNOWN_COMMAND`, is
/// [`Command::Other`]: the server answers it once, and a proxy passes it through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `use <tube>` with a name the server accepts: it answers `USING <tube>`.
    Use {
        tube: String,
    },
    /// `release <id> <pri> <delay>`.
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    /// `bury <id> <pri>`.
    Bury {
        id: u64,
        pri: u32,
    },
    /// `delete`, `peek`, `stats-job`, `kick-job`, `touch` or `reserve-job` with a well-formed id.
    Job {
        verb: JobVerb,
        id: u64,
    },
    /// `quit` (any line starting so): the server closes the connection and answers nothing.
    Quit,
    Other,
}

/// How the server reads a `put` line (`line` without `\r\n`, NUL-free).
pub(super) enum PutLine {
    /// Arguments the server rejects (`BAD_FORMAT`): no body follows, the next bytes are commands.
    Malformed,
    /// A body longer than the maximum job size: the server throws away `bytes + 2` bytes, then
    /// answers `JOB_TOO_BIG`. (It checks this before trailing garbage.)
    TooBig(u32),
    /// Bytes after the size (`BAD_FORMAT`): no body follows.
    Trailing,
    Ok(Put),
}

/// `put <pri> <delay> <ttr> <bytes>`: each number as the server's `read_u32` takes it.
pub(super) fn put_line(line: &[u8], max_job_size: u32) -> PutLine {
    let rest = &line[b"put ".len()..];
    let Some((pri, rest)) = number(rest, u64::from(u32::MAX)) else {
        return PutLine::Malformed;
    };
    let Some((delay, rest)) = number(rest, u64::from(u32::MAX)) else {
        return PutLine::Malformed;
    };
    let Some((ttr, rest)) = number(rest, u64::from(u32::MAX)) else {
        return PutLine::Malformed;
    };
    let Some((bytes, rest)) = number(rest, u64::from(u32::MAX)) else {
        return PutLine::Malformed;
    };
    let bytes = bytes as u32;
    if bytes > max_job_size {
        return PutLine::TooBig(bytes);
    }
    if !rest.is_empty() {
        return PutLine::Trailing;
    }
    PutLine::Ok(Put {
        pri: pri as u32,
        delay: delay as u32,
        ttr: ttr as u32,
        bytes,
    })
}

/// One number as the server reads it: spaces skipped, then at least one digit, at most `max`
/// (and no more than a `u64` holds); the rest of the line after its digits.
fn number(s: &[u8], max: u64) -> Option<(u64, &[u8])> {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let s = &s[start..];
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= max).then_some((n, &s[digits..]))
}

/// One number that must end the line.
fn last_number(s: &[u8], max: u64) -> Option<u64> {
    match number(s, max)? {
        (n, []) => Some(n),
        _ => None,
    }
}

/// Whether the server accepts `name` as a tube name: 1 to 200 bytes of `A-Za-z0-9-+/;.$_()`,
/// not starting with `-`.
pub fn is_valid_tube(name: &[u8]) -> bool {
    (1..=MAX_TUBE_NAME).contains(&name.len())
        && name[0] != b'-'
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b))
}

/// The command on `line` (without `\r\n`), for a line that is not a `put`. The server matches
/// command words as prefixes, in its own order (`peek ` before `peek-ready`, `reserve-job `
/// before `reserve`), which this follows for the commands it names.
pub(super) fn command(line: &[u8]) -> Command {
    let after = |word: &[u8]| line.strip_prefix(word);
    let u32_max = u64::from(u32::MAX);
    let job = |verb, rest: &[u8]| match last_number(rest, u64::MAX) {
        Some(id) => Command::Job { verb, id },
        None => Command::Other,
    };
    if let Some(rest) = after(b"peek ") {
        return job(JobVerb::Peek, rest);
    }
    if line.starts_with(b"peek-") || line.starts_with(b"reserve-with-timeout ") {
        return Command::Other;
    }
    if let Some(rest) = after(b"reserve-job ") {
        return job(JobVerb::ReserveJob, rest);
    }
    if line.starts_with(b"reserve") {
        return Command::Other;
    }
    if let Some(rest) = after(b"delete ") {
        return job(JobVerb::Delete, rest);
    }
    if let Some(rest) = after(b"release ") {
        let release = number(rest, u64::MAX).and_then(|(id, rest)| {
            let (pri, rest) = number(rest, u32_max)?;
            Some((id, pri as u32, last_number(rest, u32_max)? as u32))
        });
        return match release {
            Some((id, pri, delay)) => Command::Release { id, pri, delay },
            None => Command::Other,
        };
    }
    if let Some(rest) = after(b"bury ") {
        let bury = number(rest, u64::MAX)
            .and_then(|(id, rest)| Some((id, last_number(rest, u32_max)? as u32)));
        return match bury {
            Some((id, pri)) => Command::Bury { id, pri },
            None => Command::Other,
        };
    }
    if line.starts_with(b"kick ") {
        return Command::Other;
    }
    if let Some(rest) = after(b"kick-job ") {
        return job(JobVerb::KickJob, rest);
    }
    if let Some(rest) = after(b"touch ") {
        return job(JobVerb::Touch, rest);
    }
    if let Some(rest) = after(b"stats-job ") {
        return job(JobVerb::StatsJob, rest);
    }
    if line.starts_with(b"stats") {
        return Command::Other;
    }
    if let Some(name) = after(b"use ") {
        return match is_valid_tube(name) {
            true => Command::Use {
                tube: String::from_utf8_lossy(name).into_owned(),
            },
            false => Command::Other,
        };
    }
    if line.starts_with(b"watch ") || line.starts_with(b"ignore ") || line.starts_with(b"list-tube")
    {
        return Command::Other;
    }
    if line.starts_with(b"quit") {
        return Command::Quit;
    }
    Command::Other
}
