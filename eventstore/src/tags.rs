//! An event's tags, packed: every value's text back to back in one string, and where
//! each value and each tag ends in one list of offsets.
//!
//! A relay builds an [`crate::Event`] for every event it takes in and every one it
//! serves. As a list of lists of strings, an event with five tags of two or three values
//! cost eighteen allocations (and as many frees); packed, it keeps two whatever the
//! count (building takes two more, freed at once, and more only past 8 tags, 16 values
//! or 256 bytes). Reading is as direct as before: a value is a slice of the one string.

use std::fmt;

/// The tags of one event (NIP-01: a list of lists of strings).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// Every value, unescaped, back to back. A `String`, not a boxed `str`: boxing
    /// would reallocate whenever the builder's guess at the room was too large.
    text: String,
    /// `[tag count, for each tag the index in the value list after its last value,
    /// for each value the offset in text after it]`.
    layout: Box<[u32]>,
}

impl Tags {
    /// How many tags.
    pub fn len(&self) -> usize {
        self.layout.first().map_or(0, |&n| n as usize)
    }

    /// No tags at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tag `i`, if there are that many (walks the tags before it).
    pub fn get(&self, i: usize) -> Option<Tag<'_>> {
        self.iter().nth(i)
    }

    /// The tags in order.
    pub fn iter(&self) -> TagIter<'_> {
        let n = self.len();
        let (tag_ends, value_ends) = match self.layout.get(1..) {
            Some(rest) => rest.split_at(n),
            None => (&[][..], &[][..]),
        };
        TagIter {
            text: &self.text,
            tag_ends,
            value_ends,
            first: 0,
        }
    }

    /// Bytes of all values together (without JSON quotes or escapes).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Bytes held on the heap: the text's allocation and the layout's.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + 4 * self.layout.len()
    }

    /// How many values all tags hold together.
    pub fn value_count(&self) -> usize {
        self.layout.len().saturating_sub(1 + self.len())
    }

    /// As owned lists, for callers that need to change them.
    pub fn to_vecs(&self) -> Vec<Vec<String>> {
        self.iter().map(|t| t.to_vec()).collect()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = Tag<'a>;
    type IntoIter = TagIter<'a>;
    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

impl<S: AsRef<str>> From<&[Vec<S>]> for Tags {
    fn from(tags: &[Vec<S>]) -> Tags {
        let mut b = TagsBuilder::with_capacity(
            tags.len(),
            tags.iter().map(Vec::len).sum(),
            tags.iter()
                .flat_map(|t| t.iter().map(|v| v.as_ref().len()))
                .sum(),
        );
        for tag in tags {
            for v in tag {
                b.push_str(v.as_ref());
            }
            b.end_tag();
        }
        b.finish()
    }
}

impl<S: AsRef<str>> From<Vec<Vec<S>>> for Tags {
    fn from(tags: Vec<Vec<S>>) -> Tags {
        Tags::from(tags.as_slice())
    }
}

/// One tag: its values in order (the first is its name).
#[derive(Clone, Copy)]
pub struct Tag<'a> {
    text: &'a str,
    /// Where each value ends in `text`.
    ends: &'a [u32],
    /// Where the first value starts.
    start: usize,
}

impl<'a> Tag<'a> {
    /// How many values (the name included).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// An empty tag `[]`.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Value `i` (0 is the name).
    pub fn get(&self, i: usize) -> Option<&'a str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 {
            self.start
        } else {
            self.ends[i - 1] as usize
        };
        // Offsets are only ever recorded at the ends of whole pushed strings.
        self.text.get(start..end)
    }

    /// The name (the first value).
    pub fn name(&self) -> Option<&'a str> {
        self.get(0)
    }

    /// The second value: what `#x` filters and most NIPs read.
    pub fn value(&self) -> Option<&'a str> {
        self.get(1)
    }

    /// The values in order.
    pub fn iter(&self) -> Values<'a> {
        Values {
            text: self.text,
            ends: self.ends,
            start: self.start,
        }
    }

    /// The values as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for Tag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Tag<'_> {
    fn eq(&self, other: &Tag<'_>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a> IntoIterator for Tag<'a> {
    type Item = &'a str;
    type IntoIter = Values<'a>;
    fn into_iter(self) -> Values<'a> {
        self.iter()
    }
}

/// The values of one [`Tag`], in order.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    text: &'a str,
    /// The ends of the values still to come.
    ends: &'a [u32],
    /// Where the next value starts.
    start: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (&end, rest) = self.ends.split_first()?;
        self.ends = rest;
        let start = std::mem::replace(&mut self.start, end as usize);
        self.text.get(start..end as usize)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl ExactSizeIterator for Values<'_> {}

/// The tags of [`Tags::iter`].
#[derive(Clone, Debug)]
pub struct TagIter<'a> {
    text: &'a str,
    /// The ends (in the value list) of the tags still to come.
    tag_ends: &'a [u32],
    /// Every value's end in `text`.
    value_ends: &'a [u32],
    /// Where the next tag's values start in the value list.
    first: usize,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = Tag<'a>;
    fn next(&mut self) -> Option<Tag<'a>> {
        let (&end, rest) = self.tag_ends.split_first()?;
        self.tag_ends = rest;
        let first = std::mem::replace(&mut self.first, end as usize);
        let start = match first.checked_sub(1) {
            Some(i) => self.value_ends.get(i).map_or(0, |&e| e as usize),
            None => 0,
        };
        Some(Tag {
            text: self.text,
            ends: self.value_ends.get(first..end as usize).unwrap_or_default(),
            start,
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.tag_ends.len(), Some(self.tag_ends.len()))
    }
}

impl ExactSizeIterator for TagIter<'_> {}

/// Builds [`Tags`] one value at a time: push a tag's values, then end the tag.
#[derive(Debug, Default)]
pub struct TagsBuilder {
    text: String,
    tag_ends: Vec<u32>,
    value_ends: Vec<u32>,
}

impl TagsBuilder {
    /// An empty builder.
    pub fn new() -> TagsBuilder {
        TagsBuilder::default()
    }

    /// A builder with room for this many tags, values and bytes of text.
    pub fn with_capacity(tags: usize, values: usize, text: usize) -> TagsBuilder {
        TagsBuilder {
            text: String::with_capacity(text),
            tag_ends: Vec::with_capacity(tags),
            value_ends: Vec::with_capacity(values),
        }
    }

    /// Appends a value to the current tag.
    pub fn push_str(&mut self, v: &str) {
        self.text.push_str(v);
        self.end_value();
    }

    /// Appends a value given as bytes, written as lower-case hex (a 32-byte id or key
    /// kept as bytes by a store).
    pub fn push_hex(&mut self, bytes: &[u8]) {
        crate::hex::encode_into(bytes, &mut self.text);
        self.end_value();
    }

    fn end_value(&mut self) {
        self.value_ends.push(offset(self.text.len()));
    }

    /// Ends the current tag (a tag with no values pushed is `[]`).
    pub fn end_tag(&mut self) {
        self.tag_ends.push(offset(self.value_ends.len()));
    }

    /// The tags built (values pushed since the last [`Self::end_tag`] make one more).
    pub fn finish(mut self) -> Tags {
        if self.value_ends.len() > self.tag_ends.last().map_or(0, |&e| e as usize) {
            self.end_tag();
        }
        if self.tag_ends.is_empty() {
            return Tags::default();
        }
        let mut layout = Vec::with_capacity(1 + self.tag_ends.len() + self.value_ends.len());
        layout.push(offset(self.tag_ends.len()));
        layout.extend_from_slice(&self.tag_ends);
        layout.extend_from_slice(&self.value_ends);
        Tags {
            text: self.text,
            layout: layout.into_boxed_slice(),
        }
    }
}

/// An offset within one event. Events are far below 4 GiB (a relay limits them to
/// megabytes before parsing), so it always fits; saturating keeps a bug from wrapping.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads a JSON array of arrays of strings straight into a [`TagsBuilder`]: no string or
/// list of its own per value. Strict as a `Vec<Vec<String>>` would be: anything else is
/// an error.
pub(crate) struct TagsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for TagsSeed {
    type Value = Tags;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tags, D::Error> {
        d.deserialize_seq(TagsVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tags, D::Error> {
        serde::de::DeserializeSeed::deserialize(TagsSeed, d)
    }
}

struct TagsVisitor;

impl<'de> serde::de::Visitor<'de> for TagsVisitor {
    type Value = Tags;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of arrays of strings")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tags, A::Error> {
        let mut b = TagsBuilder::new();
        while seq.next_element_seed(TagSeed(&mut b))?.is_some() {
            b.end_tag();
        }
        Ok(b.finish())
    }
}

struct TagSeed<'b>(&'b mut TagsBuilder);

impl<'de> serde::de::DeserializeSeed<'de> for TagSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TagSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(ValueSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct ValueSeed<'b>(&'b mut TagsBuilder);

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        // JSON gives no counts ahead: at the first value, room for a typical event's
        // tags (a few `e` and `p` tags), grown as needed; none for an event without.
        if self.0.value_ends.capacity() == 0 {
            self.0.text.reserve(256);
            self.0.tag_ends.reserve(8);
            self.0.value_ends.reserve(16);
        }
        self.0.push_str(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Vec<Vec<String>> {
        vec![
            vec!["e".into(), "ab".into(), String::new(), "reply".into()],
            vec![],
            vec!["-".into()],
            vec!["t".into(), "héllo \"x\"".into()],
            vec![String::new()],
        ]
    }

    #[test]
    fn packed_tags_read_back_as_the_lists_they_came_from() {
        let tags = Tags::from(lists());
        assert_eq!(tags.len(), 5);
        assert_eq!(tags.to_vecs(), lists());
        assert_eq!(tags.value_count(), 8);
        let t = tags.get(0).unwrap();
        assert_eq!(
            (t.name(), t.value(), t.get(2), t.get(3), t.get(4)),
            (Some("e"), Some("ab"), Some(""), Some("reply"), None)
        );
        assert!(tags.get(1).unwrap().is_empty());
        assert_eq!(tags.get(1).unwrap().name(), None);
        assert_eq!(tags.get(2).unwrap().iter().collect::<Vec<_>>(), ["-"]);
        assert_eq!(tags.get(4).unwrap().len(), 1);
        assert!(tags.get(5).is_none());
        assert_eq!(tags.iter().count(), 5);
        assert!(tags.iter().zip(0..).all(|(t, i)| Some(t) == tags.get(i)));
        assert_eq!(format!("{tags:?}"), format!("{:?}", lists()));
        assert!(Tags::from(Vec::<Vec<String>>::new()).is_empty());
        // A tag left open is ended, not lost.
        let mut b = TagsBuilder::new();
        b.push_str("t");
        b.end_tag();
        b.push_str("p");
        b.push_str("x");
        assert_eq!(b.finish().to_vecs(), vec![vec!["t"], vec!["p", "x"]]);
        // Only empty tags: they still count.
        let empty = Tags::from(vec![Vec::<String>::new(), vec![]]);
        assert_eq!((empty.len(), empty.value_count()), (2, 0));
    }

    #[test]
    fn json_tags_parse_strictly_into_the_packed_form() {
        let json = serde_json::to_string(&lists()).unwrap();
        let tags: Tags = serde_json::from_str(&json).unwrap();
        assert_eq!(tags.to_vecs(), lists());
        for bad in [
            r#"[["a",1]]"#,
            r#"["a"]"#,
            r#"[["a"],null]"#,
            r#"{"a":1}"#,
            r#"[[["a"]]]"#,
        ] {
            assert!(serde_json::from_str::<Tags>(bad).is_err(), "{bad}");
        }
        let escaped: Tags = serde_json::from_str(r#"[["a\n\u00e9","\"b\\"]]"#).unwrap();
        assert_eq!(
            escaped.to_vecs(),
            vec![vec!["a\né".to_owned(), "\"b\\".to_owned()]]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_lists_round_trip(lists in proptest::collection::vec(
            proptest::collection::vec(".{0,12}", 0..5), 0..8)) {
            let tags = Tags::from(lists.clone());
            proptest::prop_assert_eq!(tags.to_vecs(), lists.clone());
            let parsed: Tags = serde_json::from_str(&serde_json::to_string(&lists).unwrap()).unwrap();
            proptest::prop_assert_eq!(parsed, tags);
        }
    }
}
