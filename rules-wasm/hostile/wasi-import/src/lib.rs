//! Hostile test rule: asks for ambient authority (a WASI clock). The sandbox gives a
//! rule nothing but the `host` interface, so monserv must refuse to load this one.

wit_bindgen::generate!({ path: "wit", world: "hostile:wasi/rule", generate_all });

use monserv::rules::types::EventKind;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-wasi".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let now = wasi::clocks::wall_clock::now();
        Ok(vec![Event {
            kind: EventKind::Alert,
            key: "t".into(),
            subject: format!("{}", now.seconds),
            message: String::new(),
        }])
    }
}

export!(Hostile);
