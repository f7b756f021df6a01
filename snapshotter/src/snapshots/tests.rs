//! Semantics modelled on containerd's snapshotter test suite (snapshots/testsuite).

use super::*;
use crate::meta::Kind;

fn open() -> (tempfile::TempDir, Snapshots) {
    let d = tempfile::tempdir().unwrap();
    let s = Snapshots::open(d.path()).unwrap();
    (d, s)
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn upper(s: &Snapshots, key: &str) -> PathBuf {
    s.fs(s.stat(key).unwrap().id)
}

#[test]
fn prepare_commit_view_and_mount_shapes() {
    let (_d, s) = open();
    let m = s
        .create(Kind::Active, "ns/1/a", "", BTreeMap::new())
        .unwrap();
    assert_eq!(
        (m[0].r#type.as_str(), m[0].options.clone()),
        ("bind", vec!["rw".to_string(), "rbind".into()])
    );
    std::fs::write(upper(&s, "ns/1/a").join("foo"), b"1").unwrap();
    s.commit("base", "ns/1/a", labels(&[("l", "1")])).unwrap();
    assert!(
        matches!(s.stat("ns/1/a"), Err(SnapError::NotFound(_))),
        "the active key disappears on commit"
    );
    let info = s.stat("base").unwrap();
    assert_eq!(
        info.created, info.updated,
        "a commit is a new snapshot: Created == Updated (containerd's testsuite checks it)"
    );
    assert_eq!(
        (info.kind, info.labels["l"].as_str()),
        (Kind::Committed, "1")
    );
    let m = s
        .create(Kind::Active, "ns/2/b", "base", BTreeMap::new())
        .unwrap();
    assert_eq!(m[0].r#type, "overlay");
    let opts = m[0].options.join(" ");
    assert!(
        opts.contains(&format!("lowerdir={}", s.fs(info.id).display()))
            && opts.contains("upperdir=")
            && opts.contains("workdir="),
        "{opts}"
    );
    let v = s
        .create(Kind::View, "ns/3/v", "base", BTreeMap::new())
        .unwrap();
    assert_eq!(
        (v[0].r#type.as_str(), v[0].options[0].as_str()),
        ("bind", "ro")
    );
    assert!(
        matches!(
            s.commit("x", "ns/3/v", BTreeMap::new()),
            Err(SnapError::FailedPrecondition(_))
        ),
        "views cannot be committed"
    );
    assert!(matches!(
        s.mounts("base"),
        Err(SnapError::FailedPrecondition(_))
    ));
    assert_eq!(s.mounts("ns/2/b").unwrap(), m);
}

#[test]
fn errors_follow_containerd_semantics() {
    let (_d, s) = open();
    assert!(matches!(
        s.create(Kind::Active, "k", "missing", BTreeMap::new()),
        Err(SnapError::NotFound(_))
    ));
    s.create(Kind::Active, "k", "", BTreeMap::new()).unwrap();
    assert!(matches!(
        s.create(Kind::Active, "k", "", BTreeMap::new()),
        Err(SnapError::AlreadyExists(_))
    ));
    assert!(
        matches!(
            s.create(Kind::Active, "k2", "k", BTreeMap::new()),
            Err(SnapError::FailedPrecondition(_))
        ),
        "parent must be committed"
    );
    s.commit("c", "k", BTreeMap::new()).unwrap();
    s.create(Kind::Active, "child", "c", BTreeMap::new())
        .unwrap();
    assert!(
        matches!(s.remove("c"), Err(SnapError::FailedPrecondition(_))),
        "parent with children"
    );
    s.create(Kind::Active, "k3", "", BTreeMap::new()).unwrap();
    assert!(matches!(
        s.commit("c", "k3", BTreeMap::new()),
        Err(SnapError::AlreadyExists(_))
    ));
    s.remove("child").unwrap();
    s.remove("c").unwrap();
    assert!(matches!(s.remove("c"), Err(SnapError::NotFound(_))));
}

#[test]
fn update_labels_and_usage() {
    let (_d, s) = open();
    s.create(Kind::Active, "a", "", labels(&[("x", "1"), ("y", "2")]))
        .unwrap();
    let r = s
        .update_labels(
            "a",
            labels(&[("x", "9")]),
            &["labels.x".into(), "labels.y".into()],
        )
        .unwrap();
    assert_eq!(r.labels, labels(&[("x", "9")]));
    let r = s.update_labels("a", labels(&[("z", "3")]), &[]).unwrap();
    assert_eq!(r.labels, labels(&[("z", "3")]));
    assert!(matches!(
        s.update_labels("a", BTreeMap::new(), &["parent".into()]),
        Err(SnapError::InvalidArgument(_))
    ));
    std::fs::write(upper(&s, "a").join("f"), vec![0u8; 64 << 10]).unwrap();
    let (size, inodes) = s.usage("a").unwrap();
    assert!(size >= 64 << 10 && inodes == 1, "{size} {inodes}");
}

#[test]
fn state_survives_restart_and_cleanup_removes_orphans() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = Snapshots::open(d.path()).unwrap();
        s.create(Kind::Active, "a", "", BTreeMap::new()).unwrap();
        s.commit("c", "a", BTreeMap::new()).unwrap();
        s.create(Kind::Active, "b", "c", BTreeMap::new()).unwrap();
        std::fs::create_dir_all(d.path().join("snapshots/999/fs")).unwrap();
        std::fs::write(d.path().join("blobs/sha256/deadbeef"), b"x").unwrap();
    }
    let s = Snapshots::open(d.path()).unwrap();
    assert_eq!(s.stat("c").unwrap().kind, Kind::Committed);
    assert_eq!(s.stat("b").unwrap().parent, "c");
    assert!(
        !d.path().join("snapshots/999").exists(),
        "orphan dir removed at start"
    );
    assert!(
        !d.path().join("blobs/sha256/deadbeef").exists(),
        "unreferenced blob removed at start"
    );
}

#[test]
fn concurrent_prepares_of_one_key_yield_one_winner() {
    let (_d, s) = open();
    let s = std::sync::Arc::new(s);
    let results: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.create(Kind::Active, "same", "", BTreeMap::new()).is_ok())
        })
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
}

#[test]
fn layer_files_are_visible_through_a_chain_of_real_overlay_mounts() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test mounts overlayfs and must run as root (CI does)");
    }
    let (d, s) = open();
    s.create(Kind::Active, "l1", "", BTreeMap::new()).unwrap();
    std::fs::write(upper(&s, "l1").join("a"), b"from l1").unwrap();
    std::fs::write(upper(&s, "l1").join("shadowed"), b"old").unwrap();
    s.commit("c1", "l1", BTreeMap::new()).unwrap();
    s.create(Kind::Active, "l2", "c1", BTreeMap::new()).unwrap();
    let m = s.mounts("l2").unwrap();
    let target = d.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    mount(&m[0], &target);
    std::fs::write(target.join("b"), b"from l2").unwrap();
    std::fs::write(target.join("shadowed"), b"new").unwrap();
    nix::mount::umount(&target).unwrap();
    s.commit("c2", "l2", BTreeMap::new()).unwrap();
    let v = s.create(Kind::View, "v", "c2", BTreeMap::new()).unwrap();
    mount(&v[0], &target);
    let read = |f: &str| std::fs::read_to_string(target.join(f)).unwrap();
    let (a, b, sh) = (read("a"), read("b"), read("shadowed"));
    let write_fails = std::fs::write(target.join("c"), b"x").is_err();
    nix::mount::umount(&target).unwrap();
    assert_eq!(
        (a.as_str(), b.as_str(), sh.as_str()),
        ("from l1", "from l2", "new")
    );
    assert!(write_fails, "views are read-only");
}

fn mount(m: &containerd_client::types::Mount, target: &Path) {
    use nix::mount::MsFlags;
    if m.r#type == "bind" {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .unwrap();
        if m.options.iter().any(|o| o == "ro") {
            flags |= MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).unwrap();
        }
    } else {
        let data = m.options.join(",");
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
    }
}
