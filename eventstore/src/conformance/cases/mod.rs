//! The conformance cases. Each takes a fresh, empty store.
//!
//! # Layout
//! - `basic`: saving, every filter field, limits, canonical order.
//! - `rules`: replaceable/addressable (NIP-01), deletion (NIP-09), expiration (NIP-40),
//!   ephemeral events, COUNT (NIP-45), large and many tags, the delete API.
//! - `moderation`: rulings kept and versioned; bans refuse and remove (NIP-86).

mod basic;
mod moderation;
mod rules;

pub use basic::*;
pub use moderation::*;
pub use rules::*;

/// Calls `$m!(case, $args)` for every case, so the list is written once.
#[macro_export]
macro_rules! for_each_conformance_case {
    ($m:path, $($args:tt)*) => {
        $m!(save_then_get_by_id, $($args)*);
        $m!(duplicate_is_reported, $($args)*);
        $m!(stored_json_round_trips, $($args)*);
        $m!(filter_by_ids, $($args)*);
        $m!(filter_by_authors, $($args)*);
        $m!(filter_by_kinds, $($args)*);
        $m!(filter_by_tag, $($args)*);
        $m!(filter_tag_values_are_ored, $($args)*);
        $m!(filter_tag_letters_are_anded, $($args)*);
        $m!(filter_tag_is_case_sensitive, $($args)*);
        $m!(filter_since_is_inclusive, $($args)*);
        $m!(filter_until_is_inclusive, $($args)*);
        $m!(filter_since_until_window, $($args)*);
        $m!(filter_all_fields_combined, $($args)*);
        $m!(filter_empty_matches_all, $($args)*);
        $m!(filter_empty_list_matches_nothing, $($args)*);
        $m!(limit_returns_newest, $($args)*);
        $m!(limit_zero_returns_nothing, $($args)*);
        $m!(limit_applies_per_filter, $($args)*);
        $m!(filters_union_without_repeats, $($args)*);
        $m!(canonical_order_ties_by_id, $($args)*);
        $m!(ties_across_ranges_under_a_limit, $($args)*);
        $m!(replaceable_keeps_newest, $($args)*);
        $m!(replaceable_older_arrives_later, $($args)*);
        $m!(replaceable_equal_timestamps_keep_lowest_id, $($args)*);
        $m!(replaceable_kinds_are_independent, $($args)*);
        $m!(addressable_keeps_newest_per_d, $($args)*);
        $m!(addressable_missing_d_is_empty_d, $($args)*);
        $m!(addressable_equal_timestamps_keep_lowest_id, $($args)*);
        $m!(deletion_by_id, $($args)*);
        $m!(deletion_by_foreign_author_is_ignored, $($args)*);
        $m!(deleted_event_is_refused_again, $($args)*);
        $m!(deletion_before_target_arrives, $($args)*);
        $m!(deletion_by_address, $($args)*);
        $m!(deletion_of_a_deletion_has_no_effect, $($args)*);
        $m!(deletion_by_foreign_address_is_ignored, $($args)*);
        $m!(expired_event_is_refused, $($args)*);
        $m!(expiring_event_stops_being_served, $($args)*);
        $m!(ephemeral_is_never_stored, $($args)*);
        $m!(count_matches_query, $($args)*);
        $m!(large_tag_values, $($args)*);
        $m!(many_tags, $($args)*);
        $m!(delete_api_removes_and_refuses, $($args)*);
        $m!(rulings_are_kept_and_versioned, $($args)*);
        $m!(a_banned_author_is_removed_and_refused, $($args)*);
        $m!(a_banned_event_is_removed_and_refused, $($args)*);
        $m!(purge_removes_what_it_names_in_steps, $($args)*);
        $m!(authors_over_counts_each_authors_events, $($args)*);
        $m!(many_authors_and_kinds_merge_in_order, $($args)*);
    };
}
