"""Scoring a trained model: IW-NLL, ELBO, KL, MI and AU on a split (scoring), a run folder's evaluation
(run_eval), the label probe on z and reconstruction scores."""
