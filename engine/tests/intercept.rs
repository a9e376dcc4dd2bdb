//! Interceptor hooks: rewrite, drop, answer, close.

mod support;

use fanout_engine::{Actions, Bytes, Config, ConnId, Engine, Event, Instant, Interceptor};
use support::*;

/// Upper-cases requests, answers `ping` itself, drops `secret`, closes on `bye`, and tags
/// responses; it records the hook order.
#[derive(Default)]
struct Shouty {
    calls: Vec<String>,
}

impl Interceptor for Shouty {
    fn on_connect(&mut self, conn: ConnId) {
        self.calls.push(format!("connect {}", conn.0));
    }

    fn on_data(&mut self, _conn: ConnId, data: Bytes, actions: &mut Actions) {
        match &data[..] {
            b"ping" => actions.answer(Bytes::from_static(b"pong")),
            b"secret" => {}
            b"bye" => actions.close(),
            _ => actions.forward(Bytes::from(data.to_ascii_uppercase())),
        }
    }

    fn on_response(&mut self, _conn: ConnId, data: Bytes, actions: &mut Actions) {
        actions.forward(Bytes::from_static(b"["));
        actions.forward(data);
        actions.forward(Bytes::from_static(b"]"));
    }

    fn on_finish(&mut self, conn: ConnId) {
        self.calls.push(format!("finish {}", conn.0));
    }
}

fn drive(engine: &mut Engine<Shouty>, event: Event) -> Vec<fanout_engine::Command> {
    engine.handle(Instant::ZERO, event);
    std::iter::from_fn(|| engine.poll_command()).collect()
}

fn written(cmds: &[fanout_engine::Command], to: fanout_engine::SockId) -> Vec<u8> {
    cmds.iter()
        .filter_map(|c| match c {
            fanout_engine::Command::Write { sock, data } if *sock == to => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn interceptor_rewrites_answers_drops_and_closes() {
    let mut e = Engine::with_interceptor(Config::default(), Shouty::default()).unwrap();
    let accepted = Event::Accepted {
        conn: ConnId(1),
        client: "c".into(),
    };
    drive(&mut e, accepted);
    drive(
        &mut e,
        Event::Connected {
            sock: backend(1, P),
        },
    );
    let read = |data: &'static [u8]| Event::Read {
        sock: client(1),
        data: Bytes::from_static(data),
    };
    let cmds = drive(&mut e, read(b"hello"));
    assert_eq!(written(&cmds, backend(1, P)), b"HELLO");
    let cmds = drive(&mut e, read(b"ping"));
    assert_eq!(written(&cmds, client(1)), b"pong");
    assert!(written(&cmds, backend(1, P)).is_empty());
    let cmds = drive(&mut e, read(b"secret"));
    assert!(cmds.is_empty());
    let cmds = drive(
        &mut e,
        Event::Read {
            sock: backend(1, P),
            data: Bytes::from_static(b"ok"),
        },
    );
    assert_eq!(written(&cmds, client(1)), b"[ok]");
    let cmds = drive(&mut e, read(b"bye"));
    assert!(cmds.contains(&fanout_engine::Command::Close { sock: client(1) }));
    assert!(cmds.contains(&fanout_engine::Command::Close {
        sock: backend(1, P)
    }));
    assert_eq!(e.interceptor().calls, ["connect 1", "finish 1"]);
    assert!(e.is_idle());
}
