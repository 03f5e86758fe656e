//! The operator's controllers: observe, apply and report status (issue "operator controllers").
