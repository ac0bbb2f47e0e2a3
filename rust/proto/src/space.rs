// SPDX-License-Identifier: GPL-2.0
//! What one open file owns: its transient objects, each saved as a context blob under a
//! virtual handle. (Its sessions live in the global session registry, tagged with the space
//! id.)

use core::sync::atomic::{AtomicU64, Ordering};

use super::platform::{Charged, OutOfMemory};

/// The first virtual handle handed out; later ones count down from here.
pub const VHANDLE_FIRST: u32 = 0x8000_0000;
/// The highest virtual handle (far beyond any `max_objects`).
pub const VHANDLE_LAST: u32 = 0x80FF_FFFF;

/// One transient object of a space: saved (`blob`), or loaded in the TPM (`loaded`), at
/// least one of the two.
pub struct ObjectEntry {
    /// The handle the client uses.
    pub vhandle: u32,
    /// The TPMS_CONTEXT from TPM2_ContextSave (or the client's TPM2_ContextLoad), charged to
    /// the client. `None` for a new object whose first save failed: it is only `loaded`.
    pub blob: Option<Charged<u8>>,
    /// A sequence object: its state changes with use, so it is saved again after each use.
    pub sequence: bool,
    /// The handle it stays loaded under between commands, when its save failed on the TPM's
    /// side: a new object (it has no blob yet), or one whose state changed (its `blob` is
    /// then stale). The next command that names it uses it there and saves it again;
    /// closing the space or flushing it flushes it.
    pub loaded: Option<u32>,
}

/// Why an object could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The space holds its maximum number of objects.
    Full,
    /// The table could not grow.
    OutOfMemory,
}

impl From<OutOfMemory> for InsertError {
    fn from(_: OutOfMemory) -> Self {
        InsertError::OutOfMemory
    }
}

/// Whether a space is gathering its sessions after a wait, and so which of its commands go
/// first at the TPM (see [`super::turns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathering {
    /// No: its commands take their turn like everyone's.
    No,
    /// It keeps its queue place, or slots are reserved for it, beyond what it held at once:
    /// the commands that take a session slot go first (StartAuthSession, ContextLoad).
    Slots,
    /// Every command goes first: slots are reserved for it and it holds fewer sessions than
    /// it held at once (its client finds out one command at a time that its sessions were
    /// evicted, and starts each again: a space with five sessions queued behind every busy
    /// space five times and its reservations lapsed); or its last command took a slot from
    /// the queue, and this is its first use of it (see [`super::Rm::note_gathering`]).
    All,
}

/// Where space ids come from, and how many spaces are open: two counters, so that opening
/// and closing a file never wait for the resource manager's lock, which TPM work holds (the
/// misc core holds its global lock across `open`, so every misc device's open would wait).
pub struct SpaceIds {
    next: AtomicU64,
    open: AtomicU64,
    closing: AtomicU64,
}

impl SpaceIds {
    /// No space yet; the first id is 1.
    pub const fn new() -> Self {
        SpaceIds {
            next: AtomicU64::new(1),
            open: AtomicU64::new(0),
            closing: AtomicU64::new(0),
        }
    }

    /// A new, empty space for a file opened by `uid`, with an id never used before (64 bits:
    /// never reused in practice; never 0, which names no space), counted as open until
    /// [`SpaceIds::closed`].
    pub fn open(&self, uid: u32) -> Space {
        let mut id = self.next.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            id = self.next.fetch_add(1, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Space::new(id, uid)
    }

    /// The file of a space made by [`SpaceIds::open`] was released: its close (the flushes
    /// of its contexts) is left to later work, and counted until [`SpaceIds::closed`].
    pub fn released(&self) {
        self.closing.fetch_add(1, Ordering::Relaxed);
    }

    /// A space made by [`SpaceIds::open`] is closed (its contexts flushed).
    pub fn closed(&self) {
        // Never below 0, whatever the caller does.
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let _ = self
            .closing
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Spaces open now (the gauge `open_spaces`), those released and not closed yet
    /// included.
    pub fn open_count(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Spaces whose file was released and whose close is not done yet (the gauge
    /// `closing_spaces`).
    pub fn closing_count(&self) -> u64 {
        self.closing.load(Ordering::Relaxed)
    }
}

impl Default for SpaceIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The uid of root, which may list, flush and load any file's saved or abandoned sessions.
pub const ROOT_UID: u32 = 0;

/// The resource-manager state of one open file.
pub struct Space {
    id: u64,
    /// The opener's effective uid (in the initial user namespace): whose saved and abandoned
    /// sessions of other files it may list, flush and load (see
    /// [`super::session::registry::SessionEntry::shared_with`]).
    uid: u32,
    /// Charged to the client, like the blobs.
    objects: Charged<ObjectEntry>,
    /// Finish tag of its last use of the TPM, in the virtual time of [`super::turns`].
    tpm_finish: u64,
    /// Finish tag of its uid's last turn taken by this space, in group time (see
    /// [`super::turns`]): the group's tag when the turns forgot the group.
    tpm_group_finish: u64,
    /// The slot its uid's group had in the turns when this space last took a turn: where
    /// [`super::turns::Turns::enter`] looks for the group first.
    tpm_group_slot: usize,
    /// Whether it is gathering its sessions after a wait (see [`super::Rm::note_gathering`]):
    /// which of its turns at the TPM go first.
    gathering: Gathering,
    /// Its last command took a session slot from the queue (a wait's, or a gang
    /// reservation): its next command goes first.
    slot_taken: bool,
}

impl Space {
    /// An empty space with identifier `id` (unique among live spaces; the resource manager
    /// assigns them), opened by `uid`.
    pub fn new(id: u64, uid: u32) -> Self {
        Space {
            id,
            uid,
            objects: Charged::new(),
            tpm_finish: 0,
            tpm_group_finish: 0,
            tpm_group_slot: 0,
            gathering: Gathering::No,
            slot_taken: false,
        }
    }

    /// Notes that the space's command took a session slot from the queue.
    pub(crate) fn note_slot_taken(&mut self) {
        self.slot_taken = true;
    }

    /// Whether a command took a slot from the queue since the last call.
    pub(crate) fn take_slot_taken(&mut self) -> bool {
        core::mem::take(&mut self.slot_taken)
    }

    /// Whether the space is gathering its sessions after a wait (which of its turns go
    /// first).
    pub fn gathering(&self) -> Gathering {
        self.gathering
    }

    pub(crate) fn set_gathering(&mut self, g: Gathering) {
        self.gathering = g;
    }

    /// Finish tag of the space's last turn at the TPM (see [`super::turns`]).
    pub fn tpm_finish(&self) -> u64 {
        self.tpm_finish
    }

    pub(crate) fn set_tpm_finish(&mut self, tag: u64) {
        self.tpm_finish = tag;
    }

    pub(crate) fn tpm_group_finish(&self) -> u64 {
        self.tpm_group_finish
    }

    pub(crate) fn set_tpm_group_finish(&mut self, tag: u64) {
        self.tpm_group_finish = tag;
    }

    pub(crate) fn tpm_group_slot(&self) -> usize {
        self.tpm_group_slot
    }

    pub(crate) fn set_tpm_group_slot(&mut self, slot: usize) {
        self.tpm_group_slot = slot;
    }

    /// The space's identifier (owner id in the session registry).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The opener's uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Its fair-share group: the opener's uid when sharing between users first
    /// (`Config::fair_share_by_uid`), else 0, one group for every file. The wait queue for
    /// session slots and the turns at the TPM both group spaces by it.
    pub fn share_group(&self, by_uid: bool) -> u64 {
        if by_uid {
            u64::from(self.uid)
        } else {
            0
        }
    }

    /// The space's objects.
    pub fn objects(&self) -> &[ObjectEntry] {
        &self.objects
    }

    /// Index of the object with virtual handle `vhandle`.
    pub fn find_object(&self, vhandle: u32) -> Option<usize> {
        self.objects.iter().position(|o| o.vhandle == vhandle)
    }

    /// The object with virtual handle `vhandle`.
    pub fn object(&self, vhandle: u32) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.vhandle == vhandle)
    }

    /// The object with virtual handle `vhandle`, mutably.
    pub fn object_mut(&mut self, vhandle: u32) -> Option<&mut ObjectEntry> {
        self.objects.iter_mut().find(|o| o.vhandle == vhandle)
    }

    /// Removes and returns the object with virtual handle `vhandle`.
    pub fn remove_object(&mut self, vhandle: u32) -> Option<ObjectEntry> {
        let i = self.find_object(vhandle)?;
        self.objects.swap_remove(i)
    }

    /// Drops every object (flush those in [`Space::loaded_handles`] first).
    pub fn clear(&mut self) {
        self.objects.clear();
    }

    /// TPM handles of the objects that stay loaded between commands (see
    /// [`ObjectEntry::loaded`]).
    pub fn loaded_handles(&self) -> impl Iterator<Item = u32> + '_ {
        self.objects.iter().filter_map(|o| o.loaded)
    }

    /// The lowest free virtual handle, from [`VHANDLE_FIRST`] up: numbered the way the TPM
    /// numbers its own transient objects, so that clients which walk TPM_CAP_HANDLES with
    /// `property = last + 1` (the kernel's tpm2 selftests do) see the same dense, ascending
    /// list as through /dev/tpmrm0.
    fn alloc_vhandle(&mut self) -> u32 {
        // At most objects.len() handles are taken, so one of the first len + 1 is free.
        let mut h = VHANDLE_FIRST;
        while self.find_object(h).is_some() && h < VHANDLE_LAST {
            h += 1;
        }
        h
    }

    /// Adds an object saved as `blob` or loaded under `loaded` (see [`ObjectEntry`]), if the
    /// space has fewer than `max` objects; returns its new virtual handle.
    ///
    /// # Errors
    /// [`InsertError::Full`] or [`InsertError::OutOfMemory`] (the blob is dropped; a loaded
    /// object is the caller's to flush).
    pub fn insert_object(
        &mut self,
        blob: Option<Charged<u8>>,
        loaded: Option<u32>,
        sequence: bool,
        max: usize,
    ) -> Result<u32, InsertError> {
        if self.objects.len() >= max {
            return Err(InsertError::Full);
        }
        let vhandle = self.alloc_vhandle();
        self.objects.try_push(ObjectEntry {
            vhandle,
            blob,
            sequence,
            loaded,
        })?;
        Ok(vhandle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Charged<u8> {
        let mut v = Charged::new();
        v.try_extend_from_slice(&[1, 2, 3]).unwrap();
        v
    }

    #[test]
    fn handles_are_the_lowest_free_from_0x80000000() {
        let mut s = Space::new(7, 1000);
        assert_eq!((s.id(), s.uid()), (7, 1000));
        let a = s.insert_object(Some(blob()), None, false, 64).unwrap();
        let b = s.insert_object(Some(blob()), None, true, 64).unwrap();
        assert_eq!((a, b), (0x8000_0000, 0x8000_0001));
        assert!(s.remove_object(a).is_some());
        let c = s.insert_object(Some(blob()), None, false, 64).unwrap();
        assert_eq!(c, 0x8000_0000);
        let d = s.insert_object(Some(blob()), None, false, 64).unwrap();
        assert_eq!(d, 0x8000_0002);
        assert!(s.object(b).unwrap().sequence);
        assert_eq!(s.object(c).unwrap().blob.as_ref().map(|b| b.len()), Some(3));
        assert!(s.remove_object(0x8000_0005).is_none());
        assert_eq!(s.objects().len(), 3);
        s.object_mut(c).unwrap().sequence = true;
        assert!(s.object(c).unwrap().sequence);
    }

    #[test]
    fn space_ids_are_unique_and_counted() {
        let ids = SpaceIds::new();
        let a = ids.open(1000);
        let b = ids.open(1000);
        assert_eq!((a.id(), b.id()), (1, 2));
        assert_eq!(ids.open_count(), 2);
        ids.released();
        assert_eq!((ids.open_count(), ids.closing_count()), (2, 1));
        ids.closed();
        assert_eq!((ids.open_count(), ids.closing_count()), (1, 0));
        ids.closed();
        ids.closed();
        assert_eq!((ids.open_count(), ids.closing_count()), (0, 0));
        assert_eq!(ids.open(0).id(), 3);
    }

    #[test]
    fn full_table() {
        let mut s = Space::new(1, 1000);
        for _ in 0..3 {
            s.insert_object(Some(blob()), None, false, 3).unwrap();
        }
        assert_eq!(
            s.insert_object(Some(blob()), None, false, 3).err(),
            Some(InsertError::Full)
        );
        s.clear();
        assert!(s.objects().is_empty());
    }

    #[test]
    fn handles_stay_unique() {
        let mut s = Space::new(1, 1000);
        for _ in 0..64 {
            s.insert_object(Some(blob()), None, false, 64).unwrap();
        }
        let mut seen = std::vec::Vec::new();
        for o in s.objects() {
            assert!(!seen.contains(&o.vhandle));
            assert!((VHANDLE_FIRST..=VHANDLE_LAST).contains(&o.vhandle));
            seen.push(o.vhandle);
        }
    }
}
