//! A reply loop is impossible by construction, and this checks the construction on the real
//! manifests (`eventing/*.yaml`, read with the runner's own loader): every Trigger filters on
//! `type`, and no type a subscriber can reply with is routed, directly or through other
//! subscribers, back to that subscriber.
//!
//! What each subscriber can reply with is written in [`REPLIES`] from the functions' code: a
//! subscriber added to the manifests without an entry there fails the check, so whoever adds one
//! has to say what it answers.

mod common;

use eventing::{Topology, Trigger};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use vidmp3_runtime::events::{AUDIO_CONVERTED, CONVERSION_FAILED};

/// The event types each subscriber (Knative Service name) can answer a delivery with.
/// - converter: 200 + an `audio.converted` or `conversion.failed` CloudEvent
///   (functions/converter/src/service.rs).
/// - notification: 200 with a plain JSON body (`{"sent": ...}`; not a CloudEvent, so no reply),
///   or a problem+json error (functions/notification/src/lib.rs).
const REPLIES: &[(&str, &[&str])] = &[
    ("converter", &[AUDIO_CONVERTED, CONVERSION_FAILED]),
    ("notification", &[]),
];

/// The name a Trigger's subscriber is known by: its `ref` name, else its `uri`.
fn subscriber_name(t: &Trigger) -> String {
    match (&t.subscriber.reference, &t.subscriber.uri) {
        (Some(r), _) => r.name.clone(),
        (None, Some(uri)) => uri.clone(),
        (None, None) => unreachable!("the loader refuses a subscriber without ref or uri"),
    }
}

/// Which subscribers receive the replies of which: `replier -> {receivers}`. A reply goes back
/// into the Broker of the Trigger that delivered the event, where every Trigger whose `type`
/// filter equals the reply's type gets it (other filter attributes are ignored, so this may see
/// more routes than RabbitMQ would, never fewer).
type ReplyRoutes = BTreeMap<String, BTreeSet<String>>;

/// The problems that could let a reply loop, and the reply routes.
fn check(topology: &Topology, replies: &[(&str, &[&str])]) -> (Vec<String>, ReplyRoutes) {
    let replies: BTreeMap<&str, &[&str]> = replies.iter().copied().collect();
    let mut problems = Vec::new();
    let mut routes = ReplyRoutes::new();
    for t in &topology.triggers {
        let name = format!("{}/{}", t.namespace, t.name);
        if !t.filter.contains_key("type") {
            problems.push(format!(
                "Trigger {name} has no `type` filter: it would receive every reply"
            ));
        }
        let replier = subscriber_name(t);
        let Some(types) = replies.get(replier.as_str()) else {
            problems.push(format!(
                "Trigger {name}: subscriber {replier:?} is not in REPLIES; say which event types it replies with"
            ));
            continue;
        };
        let receivers = routes.entry(replier).or_default();
        for other in &topology.triggers {
            let same_broker = other.namespace == t.namespace && other.broker == t.broker;
            let gets_a_reply = match other.filter.get("type") {
                Some(ty) => types.contains(&ty.as_str()),
                None => !types.is_empty(),
            };
            if same_broker && gets_a_reply {
                receivers.insert(subscriber_name(other));
            }
        }
    }
    // A loop is a cycle in the reply routes: walk every chain from every replier.
    for start in routes.keys() {
        let mut stack = vec![vec![start.clone()]];
        while let Some(chain) = stack.pop() {
            let last = chain.last().unwrap();
            for next in routes.get(last).into_iter().flatten() {
                if next == start {
                    problems.push(format!("reply loop: {} -> {next}", chain.join(" -> ")));
                } else if !chain.contains(next) {
                    let mut longer = chain.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    (problems, routes)
}

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's manifests plus `extra` (YAML documents) as one more file.
fn project_manifests_with(extra: &str) -> Topology {
    let mut sources = Vec::new();
    for file in ["broker.yaml", "triggers.yaml"] {
        let path = manifests_dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        sources.push((path, text));
    }
    sources.push((Path::new("extra.yaml").to_path_buf(), extra.to_string()));
    Topology::from_sources(&sources).expect("valid manifests")
}

/// A Trigger in the project's namespace and Broker, as an operator might add one.
fn extra_trigger(name: &str, ty: Option<&str>, subscriber: &str) -> String {
    common::trigger_yaml("vidmp3", name, ty, subscriber, None, 1)
}

#[test]
fn the_project_triggers_cannot_route_a_reply_back_to_its_replier() {
    let topology = Topology::load_dir(&manifests_dir()).unwrap();
    assert!(!topology.triggers.is_empty());
    let (problems, routes) = check(&topology, REPLIES);
    assert!(problems.is_empty(), "{problems:#?}");
    // The one reply route: the converter's replies go to notification, whose answers are not
    // events. So every chain is at most gateway -> converter -> notification.
    let expected: ReplyRoutes = [
        ("converter".to_string(), ["notification".to_string()].into()),
        ("notification".to_string(), BTreeSet::new()),
    ]
    .into();
    assert_eq!(routes, expected);
}

#[test]
fn the_check_fails_on_a_trigger_that_would_let_a_reply_loop() {
    // A Trigger without a type filter sees every event, replies included.
    let (problems, _) = check(
        &project_manifests_with(&extra_trigger("audit", None, "notification")),
        REPLIES,
    );
    assert!(
        problems.iter().any(|p| p.contains("no `type` filter")),
        "{problems:#?}"
    );

    // The converter triggered by its own reply type: converter -> converter.
    let (problems, _) = check(
        &project_manifests_with(&extra_trigger(
            "reconvert",
            Some(AUDIO_CONVERTED),
            "converter",
        )),
        REPLIES,
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "reply loop: converter -> converter"),
        "{problems:#?}"
    );

    // Notification starting to reply with a type the converter hears, and the converter
    // triggered on it: converter -> notification -> converter.
    let (problems, _) = check(
        &project_manifests_with(&extra_trigger(
            "converter-on-retry",
            Some("dev.vidmp3.retry.requested"),
            "converter",
        )),
        &[
            ("converter", &[AUDIO_CONVERTED, CONVERSION_FAILED]),
            ("notification", &["dev.vidmp3.retry.requested"]),
        ],
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "reply loop: converter -> notification -> converter"),
        "{problems:#?}"
    );

    // A subscriber nobody said anything about.
    let (problems, _) = check(
        &project_manifests_with(&extra_trigger(
            "thumbs",
            Some("dev.vidmp3.video.uploaded"),
            "thumbnailer",
        )),
        REPLIES,
    );
    assert!(
        problems.iter().any(|p| p.contains("\"thumbnailer\"")),
        "{problems:#?}"
    );
}
