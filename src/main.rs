fn main() {
    print!("{}", appdb_operator::crdgen::render_all().unwrap());
}
