use super::process::{BUFFER_LIMIT, Hub};
use super::*;

#[test]
fn io_stat_bytes_add_up_every_device() {
    let io_stat = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                       254:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
    assert_eq!(io_stat_bytes(io_stat, "rbytes="), 4097);
    assert_eq!(io_stat_bytes(io_stat, "wbytes="), 8194);
    assert_eq!(io_stat_bytes("", "rbytes="), 0);
}

#[test]
fn hub_buffers_until_a_reader_comes_and_keeps_the_exit() {
    let mut hub = Hub::default();
    hub.publish(Frame::Stdout(b"early".to_vec()));
    let mut r = hub.subscribe();
    hub.publish(Frame::Stderr(b"live".to_vec()));
    hub.publish(Frame::Exit(3));
    assert_eq!(r.try_recv().unwrap(), Frame::Stdout(b"early".to_vec()));
    assert_eq!(r.try_recv().unwrap(), Frame::Stderr(b"live".to_vec()));
    assert_eq!(r.try_recv().unwrap(), Frame::Exit(3));
    let mut late = hub.subscribe();
    assert_eq!(late.try_recv().unwrap(), Frame::Exit(3));
}

#[test]
fn hub_drops_the_oldest_output_past_its_limit() {
    let mut hub = Hub::default();
    for _ in 0..3 {
        hub.publish(Frame::Stdout(vec![b'x'; BUFFER_LIMIT / 2]));
    }
    assert!(hub.buffered_bytes <= BUFFER_LIMIT);
    assert_eq!(hub.buffered.len(), 2);
}

#[test]
fn share_paths_stay_inside_the_share() {
    assert_eq!(
        inside_share("mounts", "c1/0").unwrap(),
        std::path::Path::new("c1/0")
    );
    for bad in ["", "/etc", "../x", "c1/../../x", "./c1/0"] {
        assert!(inside_share("mounts", bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_are_checked() {
    assert!(valid_id("id", "abc-1_2.x").is_ok());
    for bad in ["", "../x", "a/b", ".hidden", "a b"] {
        assert!(valid_id("id", bad).is_err(), "{bad}");
    }
}
