//! The `tusk-operator` binary: see [`tusk::cli`].
fn main() {
    let webhook = tusk::crd::ConversionWebhook {
        endpoint: tusk::crd::WebhookEndpoint::Url("https://127.0.0.1:9443/convert".into()),
        ca_bundle: None,
    };
    print!("{}", tusk::crd::to_yaml(&tusk::crd::crds(&webhook)));
}
