//! Several watched namespaces as one cache (`WATCH_NAMESPACE=a,b`), for an operator whose
//! Roles cover only those namespaces.
//!
//! kube's reflector takes one watcher per store: every (re)list of a watcher replaces the
//! whole store, so the watchers of two namespaces cannot share one. Here each namespace has
//! its own watcher and the store is written in one place: the first lists of all
//! namespaces fill it together (one `Init` .. `InitDone`, so the store is ready only once
//! every namespace is listed), and a later relist of one namespace becomes `Apply` for what
//! it lists and `Delete` for what of that namespace it no longer lists, leaving the other
//! namespaces' objects alone. Every event is applied to the store before it is passed on,
//! and a namespace's relist is reported done only once its deletions are applied.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
};

use futures::{Stream, StreamExt, stream};
use kube::runtime::{
    reflector::{Lookup, ObjectRef, store::Writer},
    watcher,
};

/// A change in a namespace's watch, as [`reflect_namespaces`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relist {
    /// The namespace is being listed again: its part of the store may be behind.
    Started,
    /// Its list is applied, deletions included.
    Done,
    /// Its watch failed (the watcher retries); passed on as well.
    Failed(String),
}

/// The store writes and events of several namespaces' watchers (see the module docs).
pub struct Namespaces<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    writer: Writer<K>,
    dyntype: K::DynamicType,
    /// Namespaces whose first list is not done yet; empty once the store is ready.
    first: HashSet<String>,
    /// Whether the one `Init` of the first lists went out.
    started: bool,
    /// Events of namespaces done early, held until every first list is done.
    held: VecDeque<(String, watcher::Event<K>)>,
    /// What each namespace listed in its current list.
    listed: HashMap<String, HashSet<ObjectRef<K>>>,
}

impl<K: Lookup + Clone + 'static> Namespaces<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Writes into `writer` for the watchers of `namespaces`.
    pub fn new(writer: Writer<K>, dyntype: K::DynamicType, namespaces: &[String]) -> Self {
        Namespaces {
            writer,
            dyntype,
            first: namespaces.iter().cloned().collect(),
            started: false,
            held: VecDeque::new(),
            listed: HashMap::new(),
        }
    }

    fn key(&self, obj: &K) -> ObjectRef<K> {
        obj.to_object_ref(self.dyntype.clone())
    }

    fn emit(&mut self, out: &mut Vec<watcher::Event<K>>, event: watcher::Event<K>) {
        self.writer.apply_watcher_event(&event);
        out.push(event);
    }

    /// Objects of `ns` in the store that its last list did not hold, deleted.
    fn prune(&mut self, ns: &str, out: &mut Vec<watcher::Event<K>>) {
        let listed = self.listed.remove(ns).unwrap_or_default();
        let gone: Vec<K> = self
            .writer
            .as_reader()
            .state()
            .into_iter()
            .filter(|obj| obj.namespace().as_deref() == Some(ns))
            .filter(|obj| !listed.contains(&self.key(obj)))
            .map(|obj| (*obj).clone())
            .collect();
        for obj in gone {
            self.emit(out, watcher::Event::Delete(obj));
        }
    }

    /// Takes one event of namespace `ns`'s watcher; returns the events applied to the store
    /// (to pass on), and the relists that changed, in order.
    pub fn push(
        &mut self,
        ns: &str,
        event: watcher::Event<K>,
    ) -> (Vec<watcher::Event<K>>, Vec<(String, Relist)>) {
        let mut out = Vec::new();
        let mut relists = Vec::new();
        if !self.first.is_empty() {
            self.first_list(ns, event, &mut out, &mut relists);
        } else {
            self.after_first(ns, event, &mut out, &mut relists);
        }
        (out, relists)
    }

    fn first_list(
        &mut self,
        ns: &str,
        event: watcher::Event<K>,
        out: &mut Vec<watcher::Event<K>>,
        relists: &mut Vec<(String, Relist)>,
    ) {
        if !self.first.contains(ns) {
            self.held.push_back((ns.to_string(), event));
            return;
        }
        match event {
            watcher::Event::Init => {
                // Also a first list started again after an error: only what this
                // attempt lists counts.
                self.listed.insert(ns.to_string(), HashSet::new());
                if !self.started {
                    self.started = true;
                    self.emit(out, watcher::Event::Init);
                }
            }
            watcher::Event::InitApply(obj) => {
                let key = self.key(&obj);
                self.listed.entry(ns.to_string()).or_default().insert(key);
                self.emit(out, watcher::Event::InitApply(obj));
            }
            watcher::Event::InitDone => {
                self.first.remove(ns);
                if self.first.is_empty() {
                    self.emit(out, watcher::Event::InitDone);
                    // What an interrupted first list added and the last one did not hold.
                    let namespaces: Vec<String> = self.listed.keys().cloned().collect();
                    for ns in namespaces {
                        self.prune(&ns, out);
                    }
                    while let Some((ns, event)) = self.held.pop_front() {
                        self.after_first(&ns, event, out, relists);
                    }
                }
            }
            // A watcher sends no watch events before its list is done.
            other @ (watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                self.held.push_back((ns.to_string(), other));
            }
        }
    }

    fn after_first(
        &mut self,
        ns: &str,
        event: watcher::Event<K>,
        out: &mut Vec<watcher::Event<K>>,
        relists: &mut Vec<(String, Relist)>,
    ) {
        match event {
            watcher::Event::Init => {
                self.listed.insert(ns.to_string(), HashSet::new());
                relists.push((ns.to_string(), Relist::Started));
            }
            watcher::Event::InitApply(obj) => {
                let key = self.key(&obj);
                self.listed.entry(ns.to_string()).or_default().insert(key);
                self.emit(out, watcher::Event::Apply(obj));
            }
            watcher::Event::InitDone => {
                self.prune(ns, out);
                relists.push((ns.to_string(), Relist::Done));
            }
            other => self.emit(out, other),
        }
    }
}

/// One stream over the watchers of several namespaces, writing `writer` as described in
/// the module docs. `relist` hears each namespace's relists after the first lists (the
/// first lists themselves are the stream's one `Init` .. `InitDone`), each `Done` only
/// once the namespace's deletions are in the store.
pub fn reflect_namespaces<K, S, E>(
    writer: Writer<K>,
    dyntype: K::DynamicType,
    streams: Vec<(String, S)>,
    mut relist: impl FnMut(&str, Relist) + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, E>> + Send
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let namespaces: Vec<String> = streams.iter().map(|(ns, _)| ns.clone()).collect();
    let mut state = Namespaces::new(writer, dyntype, &namespaces);
    let merged = stream::select_all(
        streams
            .into_iter()
            .map(|(ns, s)| s.map(move |item| (ns.clone(), item)).boxed()),
    );
    merged
        .map(move |(ns, item)| match item {
            Err(e) => {
                relist(&ns, Relist::Failed(e.to_string()));
                vec![Err(e)]
            }
            Ok(event) => {
                let (events, relists) = state.push(&ns, event);
                for (ns, phase) in relists {
                    relist(&ns, phase);
                }
                events.into_iter().map(Ok).collect()
            }
        })
        .flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{api::ObjectMeta, runtime::reflector};

    use super::*;

    fn cm(ns: &str, name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn setup() -> (Namespaces<ConfigMap>, reflector::Store<ConfigMap>) {
        let (reader, writer) = reflector::store();
        let state = Namespaces::new(writer, (), &["a".to_string(), "b".to_string()]);
        (state, reader)
    }

    fn names(store: &reflector::Store<ConfigMap>) -> Vec<String> {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default(),
                    o.metadata.resource_version.clone().unwrap_or_default()
                )
            })
            .collect();
        names.sort();
        names
    }

    fn kinds(events: &[watcher::Event<ConfigMap>]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                watcher::Event::Init => "Init",
                watcher::Event::InitApply(_) => "InitApply",
                watcher::Event::InitDone => "InitDone",
                watcher::Event::Apply(_) => "Apply",
                watcher::Event::Delete(_) => "Delete",
            })
            .collect()
    }

    #[test]
    fn the_first_lists_fill_the_store_together_and_it_is_ready_only_after_both() {
        let (mut s, store) = setup();
        let (out, _) = s.push("a", watcher::Event::Init);
        assert_eq!(kinds(&out), ["Init"]);
        let (out, _) = s.push("b", watcher::Event::Init);
        assert!(out.is_empty(), "one Init for both");
        s.push("a", watcher::Event::InitApply(cm("a", "x", "1")));
        let (out, _) = s.push("a", watcher::Event::InitDone);
        assert!(out.is_empty(), "b is still listing");
        // a's watch events wait for b's list, so the store's swap cannot lose them.
        let (out, _) = s.push("a", watcher::Event::Apply(cm("a", "y", "2")));
        assert!(out.is_empty());
        s.push("b", watcher::Event::InitApply(cm("b", "z", "3")));
        assert!(
            names(&store).is_empty(),
            "nothing before every list is done"
        );
        let (out, relists) = s.push("b", watcher::Event::InitDone);
        assert_eq!(kinds(&out), ["InitDone", "Apply"]);
        assert!(relists.is_empty());
        assert_eq!(names(&store), ["a/x@1", "a/y@2", "b/z@3"]);
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_others_alone_and_deletes_what_it_lost() {
        let (mut s, store) = setup();
        for ns in ["a", "b"] {
            s.push(ns, watcher::Event::Init);
            s.push(ns, watcher::Event::InitApply(cm(ns, "x", "1")));
            s.push(ns, watcher::Event::InitApply(cm(ns, "y", "1")));
        }
        s.push("a", watcher::Event::InitDone);
        s.push("b", watcher::Event::InitDone);
        let (_, relists) = s.push("a", watcher::Event::Init);
        assert_eq!(relists, [("a".to_string(), Relist::Started)]);
        let (out, _) = s.push("a", watcher::Event::InitApply(cm("a", "x", "5")));
        assert_eq!(kinds(&out), ["Apply"]);
        let (out, relists) = s.push("a", watcher::Event::InitDone);
        assert_eq!(kinds(&out), ["Delete"], "a/y is gone");
        assert_eq!(relists, [("a".to_string(), Relist::Done)]);
        assert_eq!(names(&store), ["a/x@5", "b/x@1", "b/y@1"]);
        // Watch events pass through as they are.
        let (out, _) = s.push("b", watcher::Event::Delete(cm("b", "x", "1")));
        assert_eq!(kinds(&out), ["Delete"]);
        assert_eq!(names(&store), ["a/x@5", "b/y@1"]);
    }

    #[test]
    fn a_first_list_started_again_counts_only_its_last_attempt() {
        let (mut s, store) = setup();
        s.push("a", watcher::Event::Init);
        s.push("a", watcher::Event::InitApply(cm("a", "gone", "1")));
        // The list failed half way and starts again; "gone" was deleted meanwhile.
        s.push("a", watcher::Event::Init);
        s.push("a", watcher::Event::InitApply(cm("a", "kept", "2")));
        s.push("a", watcher::Event::InitDone);
        s.push("b", watcher::Event::Init);
        let (out, _) = s.push("b", watcher::Event::InitDone);
        assert_eq!(kinds(&out), ["InitDone", "Delete"]);
        assert_eq!(names(&store), ["a/kept@2"]);
    }

    #[test]
    fn a_namespace_relisting_before_the_others_are_listed_is_replayed_after() {
        let (mut s, store) = setup();
        s.push("a", watcher::Event::Init);
        s.push("a", watcher::Event::InitApply(cm("a", "x", "1")));
        s.push("a", watcher::Event::InitDone);
        // a's watch failed and it lists again while b still lists its first.
        s.push("a", watcher::Event::Init);
        s.push("a", watcher::Event::InitDone);
        s.push("b", watcher::Event::Init);
        let (out, relists) = s.push("b", watcher::Event::InitDone);
        assert_eq!(
            kinds(&out),
            ["InitDone", "Delete"],
            "a's second list had no x"
        );
        assert_eq!(
            relists,
            [
                ("a".to_string(), Relist::Started),
                ("a".to_string(), Relist::Done)
            ]
        );
        assert!(names(&store).is_empty());
    }
}
