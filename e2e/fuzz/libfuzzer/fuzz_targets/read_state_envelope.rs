#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| thicket_fuzz::read_state_envelope(data));
