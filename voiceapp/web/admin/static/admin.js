// voiceapp console: the only script. "Speak it" reads a tried reply with the browser's own voice.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.speak");
  if (!button || !("speechSynthesis" in window)) return;
  speechSynthesis.cancel();
  speechSynthesis.speak(new SpeechSynthesisUtterance(button.dataset.text || ""));
});
