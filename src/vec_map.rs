//! A map over a `Vec` for the handful of entries the client keeps (streams it
//! follows, pending promises, listeners). Linear search over a few entries is
//! as fast as hashing, and one small generic type instead of a hash table per
//! key and value type keeps the browser SDK small.

use std::borrow::Borrow;

/// An insertion-ordered map with linear lookup.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<K: Eq, V> VecMap<K, V> {
    fn index<Q: Eq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        self.entries.iter().position(|(k, _)| k.borrow() == key)
    }

    pub(crate) fn get<Q: Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.index(key).map(|i| &self.entries[i].1)
    }

    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // the wasm driver's
    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.index(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    pub(crate) fn remove<Q: Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.index(key).map(|i| self.entries.swap_remove(i).1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut m: VecMap<String, u32> = VecMap::default();
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 3), Some(1));
        assert_eq!((m.get("a"), m.get("b")), (Some(&3), Some(&2)));
        assert_eq!(m.insert("c".into(), 10), None);
        assert_eq!(m.get("c"), Some(&10));
        assert_eq!(m.remove("a"), Some(3));
        assert_eq!(m.get("a"), None);
        assert_eq!(m.values().sum::<u32>(), 12);
        m.clear();
        assert!(m.is_empty());
    }
}
