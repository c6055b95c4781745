//! A firmware that never returns from main: the emulation runner must kill it at its timeout.
#![no_std]
#![no_main]

mote_fw::main!(run);

fn run() -> i32 {
    mote_fw::println!("hang: looping forever");
    loop {
        core::hint::spin_loop();
    }
}
