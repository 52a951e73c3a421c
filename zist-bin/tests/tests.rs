mod daemon;
